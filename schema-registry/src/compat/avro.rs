//! Avro's reader/writer resolution rules, with the logical types
//! apache-avro's checker gets wrong.

use std::collections::BTreeMap;

use apache_avro::Schema as AvroSchema;
use apache_avro::schema::{FixedSchema, Name, UnionSchema};
use apache_avro::schema_compatibility::SchemaCompatibility;

/// Whether data written with `writer` can be read with `reader`, by the
/// Avro specification's resolution rules.
///
/// apache-avro's checker (which does the rest) calls any two decimals
/// inconclusive, so a schema with a decimal could never evolve (and it
/// refuses two `duration`s too). Decimals are therefore checked here, as the specification says ("two decimal schemas
/// match if their scales and precisions match") and then replaced, in both
/// schemas, by stand-ins the checker compares by name: a `fixed` decimal by
/// its own `fixed` type, after its precision and scale were compared between
/// the schemas under its name; a `bytes` decimal by a `fixed` type named after
/// its precision and scale, so that only equal decimals match (and neither
/// matches plain `bytes`); a `duration` by a 12-byte `fixed` of one name.
pub(super) fn can_read(writer: &AvroSchema, reader: &AvroSchema) -> Result<(), String> {
    let (writer, writer_decimals) = without_decimals(writer);
    let (reader, reader_decimals) = without_decimals(reader);
    for (name, written) in &writer_decimals {
        if let Some(read) = reader_decimals.get(name)
            && read != written
        {
            return Err(format!(
                "decimal `{name}` is decimal({},{}) in the writer's schema and decimal({},{}) in the \
                 reader's: decimals match only with equal precision and scale",
                written.0, written.1, read.0, read.1
            ));
        }
    }
    SchemaCompatibility::can_read(&writer, &reader).map_err(|e| e.to_string())
}

/// `schema` with every decimal replaced by a `fixed` stand-in (see
/// [`can_read`]), and the precision and scale of its `fixed` decimals by
/// full name.
fn without_decimals(schema: &AvroSchema) -> (AvroSchema, BTreeMap<String, (usize, usize)>) {
    fn stand_in(name: String, size: usize) -> AvroSchema {
        AvroSchema::Fixed(FixedSchema {
            name: Name {
                name,
                namespace: Some("tributary".into()),
            },
            aliases: None,
            doc: None,
            size,
            default: None,
            attributes: BTreeMap::new(),
        })
    }
    fn strip(schema: &mut AvroSchema, fixed: &mut BTreeMap<String, (usize, usize)>) {
        match schema {
            AvroSchema::Decimal(decimal) => {
                let (precision, scale) = (decimal.precision, decimal.scale);
                *schema = match &*decimal.inner {
                    AvroSchema::Fixed(inner) => {
                        fixed.insert(inner.name.fullname(None), (precision, scale));
                        AvroSchema::Fixed(inner.clone())
                    }
                    _ => stand_in(format!("decimal_{precision}_{scale}"), 0),
                };
            }
            AvroSchema::BigDecimal => *schema = stand_in("big_decimal".into(), 0),
            // The checker does not know `duration` either (a 12-byte fixed).
            AvroSchema::Duration => *schema = stand_in("duration".into(), 12),
            AvroSchema::Record(record) => {
                for field in &mut record.fields {
                    strip(&mut field.schema, fixed);
                }
            }
            AvroSchema::Array(array) => strip(&mut array.items, fixed),
            AvroSchema::Map(map) => strip(&mut map.types, fixed),
            AvroSchema::Union(union) => {
                let mut variants = union.variants().to_vec();
                for variant in &mut variants {
                    strip(variant, fixed);
                }
                if let Ok(stripped) = UnionSchema::new(variants) {
                    *union = stripped;
                }
            }
            _ => {}
        }
    }
    let mut schema = schema.clone();
    let mut fixed = BTreeMap::new();
    strip(&mut schema, &mut fixed);
    (schema, fixed)
}
