//! One message's data into the batch builder: JSON through the flattener,
//! Avro and Protobuf through their schema's compiled plan.

use std::sync::Arc;

use rustc_hash::FxHashMap;

use crate::avro::{Plan, Sink};
use crate::builder::{At, BatchBuilder};
use crate::columns::ColumnTypes;
use crate::flatten::{FlattenError, Flattener};
use crate::json_schema::JsonValidator;
use crate::protobuf::{self, Indexing};
use crate::{Reason, Rejection, Val};

/// What a message's data is, as its framing and schema say.
#[derive(Debug, Clone, Copy)]
pub enum Format<'p> {
    /// JSON text (no schema, or a JSON Schema).
    Json,
    /// JSON text that must match its JSON Schema.
    ValidatedJson(&'p JsonValidator),
    /// Avro binary of the writer schema this plan was compiled for.
    Avro(&'p Plan),
    /// Protobuf binary of a message type of this plan's file, named by the
    /// message index its framing puts first.
    Protobuf(&'p protobuf::Plan, Indexing),
}

/// Decodes the messages of one batch into its builder.
#[derive(Debug)]
pub struct Decoder<'a> {
    flattener: &'a Flattener,
    types: &'a ColumnTypes,
    /// The builder's column of each column of each Avro plan and Protobuf
    /// message plan (by the plan's address, stable while the plans outlive
    /// the decoder), found on first use.
    plan_columns: FxHashMap<usize, Vec<[Option<usize>; 2]>>,
}

impl<'a> Decoder<'a> {
    /// A decoder flattening JSON with `flattener`, holding columns to `types`.
    pub fn new(flattener: &'a Flattener, types: &'a ColumnTypes) -> Self {
        Self {
            flattener,
            types,
            plan_columns: FxHashMap::default(),
        }
    }

    /// The column types values are held to.
    pub fn types(&self) -> &'a ColumnTypes {
        self.types
    }

    /// Appends the rows of one message's `data` to `builder` (between its
    /// `begin_message` and `end_message`). An error means the data cannot be
    /// read at all; a bad element or column is rejected in the builder.
    pub fn decode(
        &mut self,
        format: Format<'_>,
        data: &[u8],
        builder: &mut BatchBuilder,
    ) -> Result<(), Rejection> {
        match format {
            Format::Json => self.flatten_json(utf8(data)?, builder),
            Format::ValidatedJson(validator) => {
                let text = utf8(data)?;
                let value: serde_json::Value = serde_json::from_str(text)
                    .map_err(|e| (Reason::MalformedJson, e.to_string()))?;
                validator
                    .validate(&value)
                    .map_err(|e| (Reason::Validation, e))?;
                self.flatten_json(text, builder)
            }
            Format::Avro(plan) => {
                let mut sink = self.sink(plan as *const Plan as usize, plan.columns(), builder);
                // The last element stays open: ending the message ends it.
                plan.decode_into(data, &mut sink)
                    .map_err(|e| (Reason::Decode, e.to_string()))
            }
            Format::Protobuf(plan, indexing) => {
                let decode_error = |e: crate::avro::DecodeError| (Reason::Decode, e.to_string());
                let (message, bytes) = plan.message(indexing, data).map_err(decode_error)?;
                let address = message as *const protobuf::MessagePlan as usize;
                let mut sink = self.sink(address, message.columns(), builder);
                message.decode_into(bytes, &mut sink).map_err(decode_error)
            }
        }
    }

    /// The sink of the plan at `address` with columns `names`.
    fn sink<'s>(
        &'s mut self,
        address: usize,
        names: &'s [Arc<str>],
        builder: &'s mut BatchBuilder,
    ) -> PlanSink<'s> {
        PlanSink {
            columns: self
                .plan_columns
                .entry(address)
                .or_insert_with(|| vec![[None; 2]; names.len()]),
            names,
            builder,
            types: self.types,
        }
    }

    fn flatten_json(&self, text: &str, builder: &mut BatchBuilder) -> Result<(), Rejection> {
        self.flattener
            .flatten(text, builder, self.types)
            .map_err(|e| match e {
                FlattenError::Malformed(_) => (Reason::MalformedJson, e.to_string()),
                _ => (Reason::Flatten, e.to_string()),
            })
    }
}

/// `data` as text.
fn utf8(data: &[u8]) -> Result<&str, Rejection> {
    std::str::from_utf8(data).map_err(|e| {
        (
            Reason::InvalidUtf8,
            format!("invalid UTF-8 at byte {}", e.valid_up_to()),
        )
    })
}

/// The values of one Avro or Protobuf record, appended to the builder as
/// the plan decodes them: envelope values once, each exploded element's
/// values in a row of its own.
struct PlanSink<'s> {
    builder: &'s mut BatchBuilder,
    names: &'s [Arc<str>],
    columns: &'s mut Vec<[Option<usize>; 2]>,
    types: &'s ColumnTypes,
}

impl<'v> Sink<'v> for PlanSink<'_> {
    fn start_element(&mut self) {
        self.builder.begin_element();
    }

    fn value(&mut self, element: bool, col: u32, value: Val<'v>) {
        let at = if element { At::Element } else { At::Envelope };
        let c = col as usize;
        let column = *self.columns[c][at as usize]
            .get_or_insert_with(|| self.builder.column(at, &self.names[c], self.types));
        self.builder.put_column(at, column, value);
    }
}
