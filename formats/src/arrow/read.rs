//! Reading an Arrow IPC body (stream or file format) into a data frame.
//!
//! The body is untrusted, so before `arrow-ipc` decodes anything the message framing is
//! walked here: every metadata and body length must lie inside the bytes, and the stream
//! must end with its end-of-stream marker (a cut-off upload is an error, not a shorter
//! table). The decoder therefore never allocates more than the body's size, and a panic
//! inside it is caught and reported as invalid data.
//!
//! A file is read through the stream it embeds: the file format is the `ARROW1` magic,
//! the stream format (schema, dictionaries, batches, end-of-stream marker), then a footer
//! that only indexes the same messages.

use std::collections::HashMap;
use std::io::Cursor;
use std::panic;

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Date32Type, Date64Type, Float16Type, Float32Type, Float64Type, Int16Type, Int32Type, Int64Type,
    Int8Type, TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType,
    TimestampSecondType, UInt16Type, UInt32Type, UInt64Type, UInt8Type,
};
use arrow_array::{
    new_empty_array, AnyDictionaryArray, Array, ArrayRef, ArrowPrimitiveType, PrimitiveArray,
    RecordBatch,
};
use arrow_ipc::reader::StreamReader;
use arrow_ipc::{Buffer as IpcBuffer, Message, MessageHeader};
use arrow_schema::{DataType, Field, TimeUnit};
use rookery_value::Value;
use rookery_value::{na_real, Logical, RString, NA_INTEGER};

use super::ArrowError;

const FILE_MAGIC: &[u8] = b"ARROW1";
const CONTINUATION: [u8; 4] = [0xFF; 4];

/// Reads an Arrow IPC stream or file into a data frame, all record batches concatenated.
pub fn table_from_ipc(bytes: &[u8]) -> Result<Value, ArrowError> {
    let stream = stream_part(bytes)?;
    check_framing(stream)?;
    panic::catch_unwind(|| decode(stream))
        .unwrap_or_else(|_| Err(invalid("the Arrow decoder failed on malformed input")))
}

fn invalid(message: impl Into<String>) -> ArrowError {
    ArrowError::Invalid(message.into())
}

fn truncated() -> ArrowError {
    invalid("the data ends early (truncated, or missing the end-of-stream marker)")
}

/// The stream format itself, or the stream a file embeds after its header: the magic
/// padded with zeros to the writer's alignment (8 bytes, 64 for arrow-rs). A stream never
/// starts with eight zero bytes (its first message is the schema), so the padding is
/// skipped in whole 8-byte words.
fn stream_part(bytes: &[u8]) -> Result<&[u8], ArrowError> {
    if !bytes.starts_with(FILE_MAGIC) {
        return Ok(bytes);
    }
    let closed = bytes.len() >= 16 && bytes.ends_with(FILE_MAGIC);
    let Some(mut stream) = bytes.get(8..).filter(|_| closed) else {
        return Err(invalid("truncated Arrow file (no closing ARROW1 magic)"));
    };
    while let Some(rest) = stream.strip_prefix(&[0u8; 8][..]) {
        stream = rest;
    }
    Ok(stream)
}

/// Walks the messages up to the end-of-stream marker, checking that every message lies
/// inside the bytes.
fn check_framing(mut rest: &[u8]) -> Result<(), ArrowError> {
    loop {
        let (meta_len, after) = message_length(rest)?;
        if meta_len == 0 {
            return Ok(());
        }
        let meta = after.get(..meta_len).ok_or_else(truncated)?;
        let body_len = body_length(meta)?;
        let body_and_rest = after.get(meta_len..).ok_or_else(truncated)?;
        rest = body_and_rest.get(body_len..).ok_or_else(truncated)?;
    }
}

/// A message's metadata length (0 marks the end), after the optional continuation marker.
fn message_length(bytes: &[u8]) -> Result<(usize, &[u8]), ArrowError> {
    let (word, rest) = split_word(bytes)?;
    let (word, rest) = match word == CONTINUATION {
        true => split_word(rest)?,
        false => (word, rest),
    };
    let len = i32::from_le_bytes(word);
    let len = usize::try_from(len).map_err(|_| invalid(format!("message length {len}")))?;
    Ok((len, rest))
}

fn split_word(bytes: &[u8]) -> Result<([u8; 4], &[u8]), ArrowError> {
    let (word, rest) = bytes.split_first_chunk::<4>().ok_or_else(truncated)?;
    Ok((*word, rest))
}

/// The body length a message header announces (the header is verified first), once
/// every buffer it lists is known to lie inside that body.
fn body_length(meta: &[u8]) -> Result<usize, ArrowError> {
    let message = arrow_ipc::root_as_message(meta)
        .map_err(|e| invalid(format!("malformed message header: {e}")))?;
    let len = message.bodyLength();
    let len = usize::try_from(len).map_err(|_| invalid(format!("message body length {len}")))?;
    check_buffers(&message, len)?;
    Ok(len)
}

/// Refuses a batch whose buffers reach outside its body (arrow-ipc would panic on one).
fn check_buffers(message: &Message<'_>, body_len: usize) -> Result<(), ArrowError> {
    let batch = match message.header_type() {
        MessageHeader::RecordBatch => message.header_as_record_batch(),
        MessageHeader::DictionaryBatch => {
            message.header_as_dictionary_batch().and_then(|d| d.data())
        }
        _ => None,
    };
    let Some(buffers) = batch.and_then(|b| b.buffers()) else {
        return Ok(());
    };
    let inside = |b: &IpcBuffer| {
        let (offset, length) = (u64::try_from(b.offset()), u64::try_from(b.length()));
        let end = offset
            .ok()
            .zip(length.ok())
            .and_then(|(o, l)| o.checked_add(l));
        end.is_some_and(|end| end <= body_len as u64)
    };
    match buffers.iter().all(inside) {
        true => Ok(()),
        false => Err(invalid("a buffer lies outside its message body")),
    }
}

fn decode(stream: &[u8]) -> Result<Value, ArrowError> {
    let reader = StreamReader::try_new(Cursor::new(stream), None).map_err(arrow_invalid)?;
    let schema = reader.schema();
    let batches = reader
        .collect::<Result<Vec<RecordBatch>, _>>()
        .map_err(arrow_invalid)?;
    check_rows(&batches, stream.len())?;
    let columns = schema.fields().iter().enumerate();
    let columns = columns
        .map(|(at, field)| column(field, at, &batches))
        .collect::<Result<Vec<_>, _>>()?;
    Value::data_frame(columns).map_err(|e| invalid(e.to_string()))
}

/// Refuses more rows than the data could hold. Every column type but Null needs at least
/// a bit per row, so this only stops Null columns (which have no buffers) from announcing
/// billions of rows that would then be allocated as R vectors.
fn check_rows(batches: &[RecordBatch], bytes: usize) -> Result<(), ArrowError> {
    let rows = batches
        .iter()
        .map(RecordBatch::num_rows)
        .fold(0usize, usize::saturating_add);
    match rows > bytes.saturating_mul(8) {
        true => Err(invalid(format!("{rows} rows announced in {bytes} bytes"))),
        false => Ok(()),
    }
}

fn arrow_invalid(e: arrow_schema::ArrowError) -> ArrowError {
    invalid(e.to_string())
}

/// Column `at` of every batch, joined; an empty column of the right type without batches.
fn column(
    field: &Field,
    at: usize,
    batches: &[RecordBatch],
) -> Result<(String, Value), ArrowError> {
    let name = field.name();
    if batches.is_empty() {
        let empty = new_empty_array(field.data_type());
        return Ok((name.clone(), to_value(name, &empty)?));
    }
    let parts = batches.iter().map(|batch| match batch.columns().get(at) {
        Some(array) => to_value(name, array),
        None => Err(invalid("a record batch has fewer columns than its schema")),
    });
    let mut parts = parts.collect::<Result<Vec<_>, _>>()?;
    let joined = match parts.len() {
        1 => parts.pop().unwrap_or(Value::NULL),
        _ => Value::concat(&parts).map_err(|e| invalid(format!("column \"{name}\": {e}")))?,
    };
    Ok((name.clone(), joined))
}

/// One Arrow array as the R vector of the table in the module docs.
fn to_value(name: &str, array: &ArrayRef) -> Result<Value, ArrowError> {
    Ok(match array.data_type() {
        DataType::Null => Value::logicals(vec![Logical::NA; array.len()]),
        DataType::Boolean => Value::logicals(array.as_boolean().iter()),
        DataType::Int8 => integers(array.as_primitive::<Int8Type>()),
        DataType::Int16 => integers(array.as_primitive::<Int16Type>()),
        DataType::Int32 => integers(array.as_primitive::<Int32Type>()),
        DataType::Int64 => integers(array.as_primitive::<Int64Type>()),
        DataType::UInt8 => integers(array.as_primitive::<UInt8Type>()),
        DataType::UInt16 => integers(array.as_primitive::<UInt16Type>()),
        DataType::UInt32 => integers(array.as_primitive::<UInt32Type>()),
        DataType::UInt64 => integers(array.as_primitive::<UInt64Type>()),
        DataType::Float16 => doubles(array.as_primitive::<Float16Type>()),
        DataType::Float32 => doubles(array.as_primitive::<Float32Type>()),
        DataType::Float64 => doubles(array.as_primitive::<Float64Type>()),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
            Value::strings_na(texts(array).unwrap_or_default())
        }
        DataType::Dictionary(_, values) if is_text(values) => factor(array.as_any_dictionary()),
        DataType::Date32 => Value::date(scaled(array.as_primitive::<Date32Type>(), 1.0)),
        DataType::Date64 => Value::date(scaled(array.as_primitive::<Date64Type>(), 86_400_000.0)),
        DataType::Timestamp(unit, tz) => {
            Value::posixct(seconds(array, *unit), tz.as_deref().unwrap_or("UTC"))
        }
        other => {
            return Err(ArrowError::UnsupportedType {
                column: name.to_owned(),
                data_type: other.to_string(),
            })
        }
    })
}

fn is_text(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
    )
}

/// An R integer when every value fits (R's NA bit pattern does not), else a double.
fn integers<T: ArrowPrimitiveType>(array: &PrimitiveArray<T>) -> Value
where
    T::Native: Into<i128>,
{
    let r_int = |x: T::Native| i32::try_from(x.into()).ok().filter(|&i| i != NA_INTEGER);
    if array.iter().flatten().all(|x| r_int(x).is_some()) {
        let ints = array
            .iter()
            .map(|x| x.and_then(r_int).unwrap_or(NA_INTEGER));
        return Value::integers(ints.collect::<Vec<_>>());
    }
    let wide = array
        .iter()
        .map(|x| x.map_or(na_real(), |x| x.into() as f64));
    Value::doubles(wide.collect::<Vec<_>>())
}

fn doubles<T: ArrowPrimitiveType>(array: &PrimitiveArray<T>) -> Value
where
    T::Native: Into<f64>,
{
    let values = array.iter().map(|x| x.map_or(na_real(), Into::into));
    Value::doubles(values.collect::<Vec<_>>())
}

/// The strings of a Utf8, LargeUtf8 or Utf8View array; `None` for any other type.
fn texts(array: &dyn Array) -> Option<Vec<RString>> {
    let owned = |s: Option<&str>| s.map(str::to_owned);
    Some(match array.data_type() {
        DataType::Utf8 => array.as_string::<i32>().iter().map(owned).collect(),
        DataType::LargeUtf8 => array.as_string::<i64>().iter().map(owned).collect(),
        DataType::Utf8View => array.as_string_view().iter().map(owned).collect(),
        _ => return None,
    })
}

/// A factor whose levels are the dictionary's distinct non-null values, in order.
fn factor(dict: &dyn AnyDictionaryArray) -> Value {
    let values = texts(dict.values().as_ref()).unwrap_or_default();
    let (levels, recode) = distinct_levels(&values);
    let keys = dict.keys();
    let codes: Vec<i32> = match values.is_empty() {
        true => vec![NA_INTEGER; dict.len()],
        false => (dict.normalized_keys().into_iter().enumerate())
            .map(|(row, k)| match keys.is_null(row) {
                true => NA_INTEGER,
                false => recode.get(k).copied().unwrap_or(NA_INTEGER),
            })
            .collect(),
    };
    Value::factor(codes, levels)
}

/// Unique levels, and for each dictionary entry its 1-based code (NA for a null entry).
fn distinct_levels(values: &[RString]) -> (Vec<RString>, Vec<i32>) {
    let mut levels: Vec<RString> = Vec::new();
    let mut codes: HashMap<&str, i32> = HashMap::new();
    let recode = values.iter().map(|value| {
        let Some(text) = value.as_deref() else {
            return NA_INTEGER;
        };
        *codes.entry(text).or_insert_with(|| {
            levels.push(Some(text.to_owned()));
            i32::try_from(levels.len()).unwrap_or(NA_INTEGER)
        })
    });
    let recode: Vec<i32> = recode.collect();
    (levels, recode)
}

/// Each value divided by `per` (units per day, or per second), NA for null.
fn scaled<T: ArrowPrimitiveType>(array: &PrimitiveArray<T>, per: f64) -> Vec<f64>
where
    T::Native: Into<i64>,
{
    let scale = |x: T::Native| x.into() as f64 / per;
    array.iter().map(|x| x.map_or(na_real(), scale)).collect()
}

fn seconds(array: &ArrayRef, unit: TimeUnit) -> Vec<f64> {
    match unit {
        TimeUnit::Second => scaled(array.as_primitive::<TimestampSecondType>(), 1.0),
        TimeUnit::Millisecond => scaled(array.as_primitive::<TimestampMillisecondType>(), 1e3),
        TimeUnit::Microsecond => scaled(array.as_primitive::<TimestampMicrosecondType>(), 1e6),
        TimeUnit::Nanosecond => scaled(array.as_primitive::<TimestampNanosecondType>(), 1e9),
    }
}
