//! The properties every decoding target checks of a [`Decoded`]: a reused
//! buffer decodes as a fresh one does, and the values grow at most linearly
//! with the input.

use tributary_decode::avro::{Col, Decoded, Val};

/// Panics unless `reused` (a buffer that held an earlier message) holds what
/// `fresh` holds: buffers reused from a previous message must not leak into
/// this one.
pub fn assert_same_when_reused(case: &str, fresh: &Decoded, reused: &Decoded) {
    let same_elements = fresh.elements().len() == reused.elements().len()
        && fresh
            .elements()
            .iter()
            .zip(reused.elements())
            .all(|(a, b)| same_row(a, b));
    assert!(
        same_row(&fresh.envelope, &reused.envelope) && same_elements,
        "case {case}: a reused buffer decodes differently:\n{fresh:?}\n{reused:?}"
    );
}

/// Panics when `out`, decoded from `len` bytes with a plan of `columns`
/// columns, holds more than `bound` values (list items and exploded
/// elements counted one by one).
pub fn assert_bounded(case: &str, out: &Decoded, len: usize, columns: usize, bound: usize) {
    let values = |row: &[(Col, Val)]| -> usize {
        row.iter()
            .map(|(_, v)| match v {
                Val::List(items) => 1 + items.len(),
                _ => 1,
            })
            .sum()
    };
    let total = values(&out.envelope) + out.elements().iter().map(|e| 1 + values(e)).sum::<usize>();
    assert!(
        total <= bound,
        "case {case}: {total} values decoded from {len} bytes ({columns} columns): \
         the output must grow at most linearly with the input (bound {bound})",
    );
}

/// Equal rows: the same columns, the same values.
fn same_row(a: &[(Col, Val)], b: &[(Col, Val)]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|((ca, va), (cb, vb))| ca == cb && same(va, vb))
}

/// Equal values, a NaN equal to a NaN of the same bits.
pub fn same(a: &Val, b: &Val) -> bool {
    match (a, b) {
        (Val::Double(x), Val::Double(y)) => x.to_bits() == y.to_bits(),
        (Val::List(x), Val::List(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
        }
        _ => a == b,
    }
}
