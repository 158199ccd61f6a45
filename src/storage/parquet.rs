//! The Parquet form of a stored ETL set (the open bucket format, `docs/bucket-format.md`): a pure
//! codec, bytes in and out, no I/O.
//!
//! One row per allocation (one container of one pod on one node over the set's window, plus a
//! node's `__idle__` row and a namespace's `__unmounted__` row) or per asset. Columns are the
//! API's JSON fields in snake_case, with the set's window, resolution and data end on every row
//! so that a query over many files can group by day; the same set-level facts, exactly, and the
//! format version are in the file's key-value metadata. Times are `TIMESTAMP(MICROS, UTC)`,
//! which every engine reads (Spark refuses nanoseconds): a set holding a time that is not a
//! whole microsecond cannot be written exactly and is refused with [`EncodeError::Inexact`] (the
//! caller stores it in the older JSON form instead). An empty string property is a NULL, since
//! the model does not tell "empty" from "unset".
//!
//! `decode(encode(s)) == s` for every set `encode` accepts: every f64 bit for bit, every string,
//! map, list, `Option` and time. Encoding is deterministic (the same set gives the same bytes),
//! which content addressing relies on. The decoder refuses, with a typed error and never a
//! panic, anything but a file this codec wrote: no Parquet magic, unreadable pages, a missing,
//! extra or retyped column, the other kind of set, a newer format version, a NULL where none
//! belongs, set columns that disagree with the metadata.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow_array::{
    Array, ArrayRef, BooleanArray, Float64Array, ListArray, MapArray, RecordBatch, StringArray,
    StructArray, TimestampMicrosecondArray,
};
use arrow_buffer::OffsetBuffer;
use arrow_schema::{DataType, Field, Fields, Schema, TimeUnit};
use chrono::{DateTime, SecondsFormat, Utc};

use crate::model::columns::{ColumnsBuilder, MetaSource, RowStrings};
use crate::model::{
    Allocation, AllocationColumns, AllocationSet, Asset, AssetSet, Breakdown, EtlSet, LbAllocation,
    PodInterner, PvAllocation, Resolution, SetKind, SharedCostBreakdown, Window,
};

/// The version of the layout this codec writes; files of a higher version are refused. Any
/// change to the columns (added, removed, retyped, or a changed meaning) bumps it.
pub const FORMAT_VERSION: u32 = 1;

/// The four bytes every Parquet file starts and ends with.
pub const MAGIC: &[u8; 4] = b"PAR1";

/// Key-value metadata key: the format version (`"1"`).
pub const META_FORMAT_VERSION: &str = "cost_model.format_version";
/// Key-value metadata key: `allocations` or `assets`.
pub const META_KIND: &str = "cost_model.kind";
/// Key-value metadata key: `1h` or `1d`.
pub const META_RESOLUTION: &str = "cost_model.resolution";
/// Key-value metadata key: the set's window start, RFC 3339 in UTC.
pub const META_WINDOW_START: &str = "cost_model.window_start";
/// Key-value metadata key: the set's window end, RFC 3339 in UTC.
pub const META_WINDOW_END: &str = "cost_model.window_end";
/// Key-value metadata key: how far the set's data reaches, RFC 3339 in UTC.
pub const META_DATA_END: &str = "cost_model.data_end";

/// The `created_by` of every file: fixed, so the bytes (and the content address) of a set do not
/// change with the version of the Parquet library.
const CREATED_BY: &str = "cost-model (docs/bucket-format.md)";
/// zstd level of the pages: 2 % smaller files than level 3, at a few milliseconds a set.
const ZSTD_LEVEL: i32 = 9;
/// Rows per decoded batch.
const BATCH_ROWS: usize = 8192;

/// Whether `body` looks like a Parquet file (magic at both ends).
pub fn is_parquet(body: &[u8]) -> bool {
    body.len() >= 8 && body.starts_with(MAGIC) && body.ends_with(MAGIC)
}

/// Why a set could not be written as Parquet.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// A time the format cannot hold exactly (finer than a microsecond, or out of range).
    #[error("{what} is {time}, which is not a whole microsecond within the format's range")]
    Inexact {
        /// Which time (`data_end`, `run_end of row 3`, ...).
        what: String,
        /// The time, RFC 3339.
        time: String,
    },
    /// The Parquet writer failed.
    #[error("parquet writer: {0}")]
    Write(String),
}

/// Why bytes could not be read back as a set.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The bytes do not start and end with `PAR1`.
    #[error("not a Parquet file (no PAR1 magic)")]
    NotParquet,
    /// The Parquet reader refused the file (corrupt footer or pages).
    #[error("unreadable Parquet: {0}")]
    Read(String),
    /// A key-value metadata entry is missing or does not parse.
    #[error("metadata {key}: {problem}")]
    Metadata {
        /// The key.
        key: &'static str,
        /// What is wrong with it.
        problem: String,
    },
    /// Written by a newer release, in a layout this one does not know.
    #[error("format version {found} is newer than this release reads ({supported})")]
    NewerFormat {
        /// The file's version.
        found: u32,
        /// The newest this codec reads.
        supported: u32,
    },
    /// The file's columns are not the ones its kind has.
    #[error("column {column}: {problem}")]
    Schema {
        /// The column.
        column: String,
        /// Missing, unexpected, or of another type.
        problem: String,
    },
    /// A value that cannot be: a NULL where none belongs, a time out of range, a duplicated map
    /// key, a set column that disagrees with the metadata.
    #[error("column {column}, row {row}: {problem}")]
    Value {
        /// The column.
        column: String,
        /// The row (0-based).
        row: usize,
        /// What is wrong.
        problem: String,
    },
}

impl DecodeError {
    /// A batch's error with its row counted from the file's start (the batch starts at
    /// `first_row`).
    fn in_file(self, first_row: usize) -> Self {
        match self {
            DecodeError::Value {
                column,
                row,
                problem,
            } => DecodeError::Value {
                column,
                row: row + first_row,
                problem,
            },
            other => other,
        }
    }
}

fn value_err(column: &str, row: usize, problem: impl Into<String>) -> DecodeError {
    DecodeError::Value {
        column: column.to_string(),
        row,
        problem: problem.into(),
    }
}

// ---------------------------------------------------------------------------------------------
// Column types: what each column is in Arrow (and so in Parquet).

fn utc_micros() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

fn string_list() -> DataType {
    DataType::List(Arc::new(Field::new("element", DataType::Utf8, false)))
}

/// `MAP<key, value>` with Parquet's field names, so that a file read back has the same type.
fn map_of(value: DataType) -> DataType {
    DataType::Map(
        Arc::new(Field::new(
            "key_value",
            DataType::Struct(Fields::from(vec![
                Field::new("key", DataType::Utf8, false),
                Field::new("value", value, false),
            ])),
            false,
        )),
        false,
    )
}

fn string_map() -> DataType {
    map_of(DataType::Utf8)
}

// ---------------------------------------------------------------------------------------------
// Nested structs (the values of `pvs`, `lb_allocations`, `shared_cost_breakdown`, and the asset
// breakdowns): a table of leaves, each a field of the Rust struct.

/// One field of a nested struct: a float, a string (stored as it is) or a boolean.
enum Leaf<T> {
    F64(&'static str, fn(&T) -> f64, fn(&mut T, f64)),
    Str(&'static str, fn(&T) -> &str, fn(&mut T, String)),
    Bool(&'static str, fn(&T) -> bool, fn(&mut T, bool)),
}

impl<T> Leaf<T> {
    fn name(&self) -> &'static str {
        match self {
            Leaf::F64(n, ..) | Leaf::Str(n, ..) | Leaf::Bool(n, ..) => n,
        }
    }
    fn field(&self) -> Field {
        let t = match self {
            Leaf::F64(..) => DataType::Float64,
            Leaf::Str(..) => DataType::Utf8,
            Leaf::Bool(..) => DataType::Boolean,
        };
        Field::new(self.name(), t, false)
    }
}

macro_rules! leaf {
    (f64 $t:ty, $f:ident) => {
        Leaf::<$t>::F64(stringify!($f), |x| x.$f, |x, v| x.$f = v)
    };
    (str $t:ty, $f:ident) => {
        Leaf::<$t>::Str(stringify!($f), |x| x.$f.as_str(), |x, v| x.$f = v)
    };
    (bool $t:ty, $f:ident) => {
        Leaf::<$t>::Bool(stringify!($f), |x| x.$f, |x, v| x.$f = v)
    };
}

fn struct_fields<T>(leaves: &[Leaf<T>]) -> Fields {
    leaves.iter().map(Leaf::field).collect()
}

fn struct_type<T>(leaves: &[Leaf<T>]) -> DataType {
    DataType::Struct(struct_fields(leaves))
}

/// A struct array of `items`, one leaf per field.
fn struct_array<T>(leaves: &[Leaf<T>], items: &[&T]) -> Result<StructArray, EncodeError> {
    let arrays: Vec<ArrayRef> = leaves
        .iter()
        .map(|leaf| -> ArrayRef {
            match leaf {
                Leaf::F64(_, get, _) => {
                    Arc::new(Float64Array::from_iter_values(items.iter().map(|x| get(x))))
                }
                Leaf::Str(_, get, _) => {
                    Arc::new(StringArray::from_iter_values(items.iter().map(|x| get(x))))
                }
                Leaf::Bool(_, get, _) => Arc::new(BooleanArray::from(
                    items.iter().map(|x| get(x)).collect::<Vec<bool>>(),
                )),
            }
        })
        .collect();
    StructArray::try_new(struct_fields(leaves), arrays, None)
        .map_err(|e| EncodeError::Write(e.to_string()))
}

/// Element `i` of a struct array, read back through the leaves.
fn struct_value<T: Default>(
    leaves: &[Leaf<T>],
    arr: &StructArray,
    i: usize,
    column: &str,
    row: usize,
) -> Result<T, DecodeError> {
    let mut out = T::default();
    if arr.is_null(i) {
        return Err(value_err(column, row, "NULL struct"));
    }
    for leaf in leaves {
        let child = arr
            .column_by_name(leaf.name())
            .ok_or_else(|| value_err(column, row, format!("no field {}", leaf.name())))?;
        if child.is_null(i) {
            return Err(value_err(
                column,
                row,
                format!("NULL in field {}", leaf.name()),
            ));
        }
        match leaf {
            Leaf::F64(_, _, set) => {
                set(&mut out, downcast::<Float64Array>(child, column)?.value(i))
            }
            Leaf::Str(_, _, set) => set(
                &mut out,
                downcast::<StringArray>(child, column)?.value(i).to_string(),
            ),
            Leaf::Bool(_, _, set) => {
                set(&mut out, downcast::<BooleanArray>(child, column)?.value(i))
            }
        }
    }
    Ok(out)
}

fn pv_leaves() -> [Leaf<PvAllocation>; 3] {
    [
        leaf!(f64 PvAllocation, byte_hours),
        leaf!(f64 PvAllocation, cost),
        leaf!(str PvAllocation, provider_id),
    ]
}

fn lb_leaves() -> [Leaf<LbAllocation>; 5] {
    [
        leaf!(str LbAllocation, service),
        leaf!(f64 LbAllocation, cost),
        leaf!(bool LbAllocation, private),
        leaf!(str LbAllocation, ip),
        leaf!(f64 LbAllocation, hours),
    ]
}

fn shared_leaves() -> [Leaf<SharedCostBreakdown>; 9] {
    [
        leaf!(str SharedCostBreakdown, name),
        leaf!(f64 SharedCostBreakdown, total_cost),
        leaf!(f64 SharedCostBreakdown, cpu_cost),
        leaf!(f64 SharedCostBreakdown, gpu_cost),
        leaf!(f64 SharedCostBreakdown, ram_cost),
        leaf!(f64 SharedCostBreakdown, pv_cost),
        leaf!(f64 SharedCostBreakdown, network_cost),
        leaf!(f64 SharedCostBreakdown, load_balancer_cost),
        leaf!(f64 SharedCostBreakdown, external_cost),
    ]
}

fn breakdown_leaves() -> [Leaf<Breakdown>; 4] {
    [
        leaf!(f64 Breakdown, idle),
        leaf!(f64 Breakdown, other),
        leaf!(f64 Breakdown, system),
        leaf!(f64 Breakdown, user),
    ]
}

// ---------------------------------------------------------------------------------------------
// Row columns: each column of a row type `T`, with how to write it for all rows and how to read
// it back into rows already made.

type EncodeFn<T> = fn(&[&T]) -> Result<ArrayRef, EncodeError>;
type DecodeFn<T> = fn(&dyn Array, &mut [T], &str) -> Result<(), DecodeError>;

struct Column<T> {
    name: &'static str,
    data_type: fn() -> DataType,
    nullable: bool,
    encode: EncodeFn<T>,
    /// `None` for a derived column (written for SQL users, ignored when read).
    decode: Option<DecodeFn<T>>,
}

impl<T> Column<T> {
    fn field(&self) -> Field {
        Field::new(self.name, (self.data_type)(), self.nullable)
    }
}

fn downcast<'a, A: 'static>(arr: &'a dyn Array, column: &str) -> Result<&'a A, DecodeError> {
    arr.as_any()
        .downcast_ref::<A>()
        .ok_or_else(|| DecodeError::Schema {
            column: column.to_string(),
            problem: format!("unexpected array type {}", arr.data_type()),
        })
}

fn f64_array(values: impl Iterator<Item = f64>) -> Result<ArrayRef, EncodeError> {
    Ok(Arc::new(Float64Array::from_iter_values(values)))
}

fn decode_f64<T>(
    arr: &dyn Array,
    rows: &mut [T],
    column: &str,
    set: fn(&mut T, f64),
) -> Result<(), DecodeError> {
    let a = downcast::<Float64Array>(arr, column)?;
    if let Some(i) = (0..a.len()).find(|&i| a.is_null(i)) {
        return Err(value_err(column, i, "NULL"));
    }
    for (row, v) in rows.iter_mut().zip(a.values().iter()) {
        set(row, *v);
    }
    Ok(())
}

/// Strings that are NULL when empty (the model's "unset").
fn opt_str_array<'a>(values: impl Iterator<Item = &'a str>) -> Result<ArrayRef, EncodeError> {
    Ok(Arc::new(
        values
            .map(|s| (!s.is_empty()).then_some(s))
            .collect::<StringArray>(),
    ))
}

fn decode_opt_str<T>(
    arr: &dyn Array,
    rows: &mut [T],
    column: &str,
    set: fn(&mut T, String),
) -> Result<(), DecodeError> {
    let a = downcast::<StringArray>(arr, column)?;
    for (i, row) in rows.iter_mut().enumerate() {
        if a.is_valid(i) {
            let s = a.value(i);
            if s.is_empty() {
                return Err(value_err(column, i, "an empty string (unset is NULL)"));
            }
            set(row, s.to_string());
        }
    }
    Ok(())
}

fn micros(t: DateTime<Utc>, what: impl FnOnce() -> String) -> Result<i64, EncodeError> {
    if !t.timestamp_subsec_nanos().is_multiple_of(1000) {
        return Err(EncodeError::Inexact {
            what: what(),
            time: t.to_rfc3339_opts(SecondsFormat::AutoSi, true),
        });
    }
    Ok(t.timestamp_micros())
}

fn from_micros(v: i64, column: &str, row: usize) -> Result<DateTime<Utc>, DecodeError> {
    DateTime::from_timestamp_micros(v).ok_or_else(|| value_err(column, row, "time out of range"))
}

fn time_array(
    values: impl Iterator<Item = Option<DateTime<Utc>>>,
    column: &str,
) -> Result<ArrayRef, EncodeError> {
    let v = values
        .enumerate()
        .map(|(i, t)| {
            t.map(|t| micros(t, || format!("{column} of row {i}")))
                .transpose()
        })
        .collect::<Result<Vec<Option<i64>>, _>>()?;
    Ok(Arc::new(
        TimestampMicrosecondArray::from(v).with_timezone("UTC"),
    ))
}

fn decode_time<T>(
    arr: &dyn Array,
    rows: &mut [T],
    column: &str,
    set: fn(&mut T, Option<DateTime<Utc>>),
) -> Result<(), DecodeError> {
    let a = downcast::<TimestampMicrosecondArray>(arr, column)?;
    for (i, row) in rows.iter_mut().enumerate() {
        let t = if a.is_valid(i) {
            Some(from_micros(a.value(i), column, i)?)
        } else {
            None
        };
        set(row, t);
    }
    Ok(())
}

/// Offsets of a list or map column from the length of each row's entries.
fn offsets(lengths: impl Iterator<Item = usize>) -> Result<OffsetBuffer<i32>, EncodeError> {
    let mut total = 0usize;
    let lengths: Vec<usize> = lengths.inspect(|n| total += n).collect();
    if i32::try_from(total).is_err() {
        return Err(EncodeError::Write(
            "more list entries than Parquet's i32 offsets hold".into(),
        ));
    }
    Ok(OffsetBuffer::from_lengths(lengths))
}

fn string_list_array<'a>(
    lists: impl Iterator<Item = &'a Vec<String>> + Clone,
) -> Result<ArrayRef, EncodeError> {
    let offsets = offsets(lists.clone().map(Vec::len))?;
    let values = StringArray::from_iter_values(lists.flatten());
    let DataType::List(field) = string_list() else {
        unreachable!("string_list is a list")
    };
    Ok(Arc::new(
        ListArray::try_new(field, offsets, Arc::new(values), None)
            .map_err(|e| EncodeError::Write(e.to_string()))?,
    ))
}

fn decode_string_list<T>(
    arr: &dyn Array,
    rows: &mut [T],
    column: &str,
    set: fn(&mut T, Vec<String>),
) -> Result<(), DecodeError> {
    let a = downcast::<ListArray>(arr, column)?;
    let values = downcast::<StringArray>(a.values().as_ref(), column)?;
    let offs = a.value_offsets();
    for (i, row) in rows.iter_mut().enumerate() {
        if a.is_null(i) {
            return Err(value_err(column, i, "NULL list"));
        }
        let (s, e) = entry_range(offs, i, values.len(), column)?;
        let mut out = Vec::with_capacity(e - s);
        for j in s..e {
            if values.is_null(j) {
                return Err(value_err(column, i, "NULL list element"));
            }
            out.push(values.value(j).to_string());
        }
        set(row, out);
    }
    Ok(())
}

/// The entries of row `i` of a list or map: `offsets[i]..offsets[i + 1]`, checked.
fn entry_range(
    offs: &[i32],
    i: usize,
    len: usize,
    column: &str,
) -> Result<(usize, usize), DecodeError> {
    let bad = || value_err(column, i, "bad offsets");
    let s = usize::try_from(*offs.get(i).ok_or_else(bad)?).map_err(|_| bad())?;
    let e = usize::try_from(*offs.get(i + 1).ok_or_else(bad)?).map_err(|_| bad())?;
    if s > e || e > len {
        return Err(bad());
    }
    Ok((s, e))
}

/// A map column: per row, its entries as (key, value) with the values already an array.
fn map_array<'a>(
    keys_per_row: impl Iterator<Item = Vec<&'a str>>,
    values: ArrayRef,
    value_type: DataType,
) -> Result<ArrayRef, EncodeError> {
    let rows: Vec<Vec<&str>> = keys_per_row.collect();
    let offsets = offsets(rows.iter().map(Vec::len))?;
    let keys = StringArray::from_iter_values(rows.into_iter().flatten());
    let DataType::Map(entries_field, _) = map_of(value_type) else {
        unreachable!("map_of is a map")
    };
    let DataType::Struct(fields) = entries_field.data_type().clone() else {
        unreachable!("map entries are structs")
    };
    let entries = StructArray::try_new(fields, vec![Arc::new(keys), values], None)
        .map_err(|e| EncodeError::Write(e.to_string()))?;
    Ok(Arc::new(
        MapArray::try_new(entries_field, offsets, entries, None, false)
            .map_err(|e| EncodeError::Write(e.to_string()))?,
    ))
}

fn string_map_array<'a>(
    maps: impl Iterator<Item = &'a BTreeMap<String, String>> + Clone,
) -> Result<ArrayRef, EncodeError> {
    let values = StringArray::from_iter_values(maps.clone().flat_map(|m| m.values()));
    map_array(
        maps.map(|m| m.keys().map(String::as_str).collect()),
        Arc::new(values),
        DataType::Utf8,
    )
}

fn struct_map_array<'a, V: 'a>(
    maps: impl Iterator<Item = &'a BTreeMap<String, V>> + Clone,
    leaves: &[Leaf<V>],
) -> Result<ArrayRef, EncodeError> {
    let items: Vec<&V> = maps.clone().flat_map(|m| m.values()).collect();
    let values = struct_array(leaves, &items)?;
    map_array(
        maps.map(|m| m.keys().map(String::as_str).collect()),
        Arc::new(values),
        struct_type(leaves),
    )
}

/// Reads a map column, building each row's map with `value` from the entries array.
fn decode_map<T, V>(
    arr: &dyn Array,
    rows: &mut [T],
    column: &str,
    value: impl Fn(usize, usize) -> Result<V, DecodeError>,
    set: impl Fn(&mut T, BTreeMap<String, V>),
) -> Result<(), DecodeError> {
    let a = downcast::<MapArray>(arr, column)?;
    let keys = downcast::<StringArray>(a.keys().as_ref(), column)?;
    let offs = a.value_offsets();
    for (i, row) in rows.iter_mut().enumerate() {
        if a.is_null(i) {
            return Err(value_err(column, i, "NULL map"));
        }
        let (s, e) = entry_range(offs, i, keys.len(), column)?;
        let mut m = BTreeMap::new();
        for j in s..e {
            if keys.is_null(j) {
                return Err(value_err(column, i, "NULL map key"));
            }
            let k = keys.value(j).to_string();
            let v = value(j, i)?;
            if m.insert(k, v).is_some() {
                return Err(value_err(column, i, "duplicate map key"));
            }
        }
        set(row, m);
    }
    Ok(())
}

fn decode_string_map<T>(
    arr: &dyn Array,
    rows: &mut [T],
    column: &str,
    set: fn(&mut T, BTreeMap<String, String>),
) -> Result<(), DecodeError> {
    let values = downcast::<MapArray>(arr, column)?.values().clone();
    let strings = downcast::<StringArray>(values.as_ref(), column)?;
    decode_map(
        arr,
        rows,
        column,
        |j, row| {
            if strings.is_null(j) {
                return Err(value_err(column, row, "NULL map value"));
            }
            Ok(strings.value(j).to_string())
        },
        set,
    )
}

fn decode_struct_map<T, V: Default>(
    arr: &dyn Array,
    rows: &mut [T],
    column: &str,
    leaves: &[Leaf<V>],
    set: fn(&mut T, BTreeMap<String, V>),
) -> Result<(), DecodeError> {
    let values = downcast::<MapArray>(arr, column)?.values().clone();
    let structs = downcast::<StructArray>(values.as_ref(), column)?;
    decode_map(
        arr,
        rows,
        column,
        |j, row| struct_value(leaves, structs, j, column, row),
        set,
    )
}

/// A row's own window: a nullable `STRUCT<start, end>` of UTC times.
fn window_type() -> DataType {
    DataType::Struct(Fields::from(vec![
        Field::new("start", utc_micros(), false),
        Field::new("end", utc_micros(), false),
    ]))
}

fn window_array(windows: &[Option<Window>], column: &str) -> Result<ArrayRef, EncodeError> {
    let DataType::Struct(fields) = window_type() else {
        unreachable!("window_type is a struct")
    };
    let part = |get: fn(&Window) -> DateTime<Utc>, what: &str| -> Result<ArrayRef, EncodeError> {
        let v = windows
            .iter()
            .enumerate()
            .map(|(i, w)| {
                // A NULL window's fields still need a value: 0, never read.
                w.as_ref().map_or(Ok(0), |w| {
                    micros(get(w), || format!("{column}.{what} of row {i}"))
                })
            })
            .collect::<Result<Vec<i64>, _>>()?;
        Ok(Arc::new(
            TimestampMicrosecondArray::from(v).with_timezone("UTC"),
        ))
    };
    let nulls =
        arrow_buffer::NullBuffer::from(windows.iter().map(Option::is_some).collect::<Vec<bool>>());
    Ok(Arc::new(
        StructArray::try_new(
            fields,
            vec![part(|w| w.start, "start")?, part(|w| w.end, "end")?],
            Some(nulls),
        )
        .map_err(|e| EncodeError::Write(e.to_string()))?,
    ))
}

fn decode_window<T>(
    arr: &dyn Array,
    rows: &mut [T],
    column: &str,
    set: fn(&mut T, Option<Window>),
) -> Result<(), DecodeError> {
    let a = downcast::<StructArray>(arr, column)?;
    let part = |name: &str| -> Result<&TimestampMicrosecondArray, DecodeError> {
        downcast::<TimestampMicrosecondArray>(
            a.column_by_name(name)
                .ok_or_else(|| DecodeError::Schema {
                    column: column.to_string(),
                    problem: format!("no field {name}"),
                })?
                .as_ref(),
            column,
        )
    };
    let (starts, ends) = (part("start")?, part("end")?);
    for (i, row) in rows.iter_mut().enumerate() {
        if a.is_null(i) {
            set(row, None);
            continue;
        }
        if starts.is_null(i) || ends.is_null(i) {
            return Err(value_err(column, i, "a window without its start or end"));
        }
        let (start, end) = (
            from_micros(starts.value(i), column, i)?,
            from_micros(ends.value(i), column, i)?,
        );
        if start > end {
            return Err(value_err(column, i, "a window that ends before it starts"));
        }
        set(row, Some(Window { start, end }));
    }
    Ok(())
}

macro_rules! window_col {
    ($t:ty, $name:literal) => {
        Column::<$t> {
            name: $name,
            data_type: window_type,
            nullable: true,
            encode: |rows| window_array(&rows.iter().map(|r| r.window).collect::<Vec<_>>(), $name),
            decode: Some(|arr, rows, c| decode_window(arr, rows, c, |r, w| r.window = w)),
        }
    };
}

macro_rules! f64_col {
    ($t:ty, $($p:ident).+) => {
        Column::<$t> {
            name: last_ident!($($p).+),
            data_type: || DataType::Float64,
            nullable: false,
            encode: |rows| f64_array(rows.iter().map(|r| r.$($p).+)),
            decode: Some(|arr, rows, c| decode_f64(arr, rows, c, |r, v| r.$($p).+ = v)),
        }
    };
}

macro_rules! last_ident {
    ($first:ident) => { stringify!($first) };
    ($first:ident . $($rest:ident).+) => { last_ident!($($rest).+) };
}

macro_rules! opt_str_col {
    ($t:ty, $name:literal, $($p:ident).+) => {
        Column::<$t> {
            name: $name,
            data_type: || DataType::Utf8,
            nullable: true,
            encode: |rows| opt_str_array(rows.iter().map(|r| r.$($p).+.as_str())),
            decode: Some(|arr, rows, c| decode_opt_str(arr, rows, c, |r, v| r.$($p).+ = v)),
        }
    };
}

macro_rules! time_col {
    ($t:ty, $name:literal, $get:expr, $set:expr) => {
        Column::<$t> {
            name: $name,
            data_type: utc_micros,
            nullable: true,
            encode: |rows| time_array(rows.iter().map(|r| $get(*r)), $name),
            decode: Some(|arr, rows, c| decode_time(arr, rows, c, $set)),
        }
    };
}

macro_rules! string_map_col {
    ($t:ty, $($p:ident).+) => {
        Column::<$t> {
            name: last_ident!($($p).+),
            data_type: string_map,
            nullable: false,
            encode: |rows| string_map_array(rows.iter().map(|r| &r.$($p).+)),
            decode: Some(|arr, rows, c| decode_string_map(arr, rows, c, |r, v| r.$($p).+ = v)),
        }
    };
}

macro_rules! struct_map_col {
    ($t:ty, $f:ident, $leaves:ident) => {
        Column::<$t> {
            name: stringify!($f),
            data_type: || map_of(struct_type(&$leaves())),
            nullable: false,
            encode: |rows| struct_map_array(rows.iter().map(|r| &r.$f), &$leaves()),
            decode: Some(|arr, rows, c| {
                decode_struct_map(arr, rows, c, &$leaves(), |r, v| r.$f = v)
            }),
        }
    };
}

macro_rules! derived_f64_col {
    ($t:ty, $name:literal, $get:expr) => {
        Column::<$t> {
            name: $name,
            data_type: || DataType::Float64,
            nullable: false,
            encode: |rows| f64_array(rows.iter().map(|r| $get(*r))),
            decode: None,
        }
    };
}

/// Every column of an allocation row, in file order (after the set columns).
fn allocation_columns() -> Vec<Column<Allocation>> {
    type A = Allocation;
    vec![
        opt_str_col!(A, "name", name),
        opt_str_col!(A, "cluster", properties.cluster),
        opt_str_col!(A, "node", properties.node),
        opt_str_col!(A, "namespace", properties.namespace),
        opt_str_col!(A, "controller_kind", properties.controller_kind),
        opt_str_col!(A, "controller", properties.controller),
        opt_str_col!(A, "pod", properties.pod),
        opt_str_col!(A, "container", properties.container),
        opt_str_col!(A, "provider_id", properties.provider_id),
        Column {
            name: "services",
            data_type: string_list,
            nullable: false,
            encode: |rows| string_list_array(rows.iter().map(|r| &r.properties.services)),
            decode: Some(|arr, rows, c| {
                decode_string_list(arr, rows, c, |r, v| r.properties.services = v)
            }),
        },
        string_map_col!(A, properties.labels),
        string_map_col!(A, properties.annotations),
        string_map_col!(A, properties.namespace_labels),
        string_map_col!(A, properties.namespace_annotations),
        window_col!(A, "allocation_window"),
        time_col!(A, "run_start", |r: &A| r.start, |r: &mut A, t| r.start = t),
        time_col!(A, "run_end", |r: &A| r.end, |r: &mut A, t| r.end = t),
        derived_f64_col!(A, "total_cost", |r: &A| r.total_cost()),
        f64_col!(A, cpu_core_request_average),
        f64_col!(A, cpu_core_usage_average),
        f64_col!(A, cpu_core_limit_average),
        f64_col!(A, cpu_core_usage_max),
        f64_col!(A, cpu_core_hours),
        f64_col!(A, cpu_cost),
        f64_col!(A, cpu_cost_adjustment),
        f64_col!(A, cpu_cost_idle),
        f64_col!(A, gpu_request_average),
        f64_col!(A, gpu_usage_average),
        f64_col!(A, gpu_hours),
        f64_col!(A, gpu_cost),
        f64_col!(A, gpu_cost_adjustment),
        f64_col!(A, gpu_cost_idle),
        f64_col!(A, ram_byte_request_average),
        f64_col!(A, ram_byte_usage_average),
        f64_col!(A, ram_byte_limit_average),
        f64_col!(A, ram_byte_usage_max),
        f64_col!(A, ram_byte_hours),
        f64_col!(A, ram_cost),
        f64_col!(A, ram_cost_adjustment),
        f64_col!(A, ram_cost_idle),
        derived_f64_col!(A, "pv_cost", |r: &A| r.pv_cost()),
        f64_col!(A, pv_cost_adjustment),
        f64_col!(A, network_transfer_bytes),
        f64_col!(A, network_receive_bytes),
        f64_col!(A, network_cost),
        f64_col!(A, network_cross_zone_cost),
        f64_col!(A, network_cross_region_cost),
        f64_col!(A, network_internet_cost),
        f64_col!(A, network_cost_adjustment),
        f64_col!(A, load_balancer_cost),
        f64_col!(A, load_balancer_cost_adjustment),
        f64_col!(A, external_cost),
        f64_col!(A, shared_cost),
        struct_map_col!(A, pvs, pv_leaves),
        struct_map_col!(A, lb_allocations, lb_leaves),
        struct_map_col!(A, shared_cost_breakdown, shared_leaves),
    ]
}

/// Compile-time guard: a field added to [`Allocation`] or its properties fails to build here
/// until it has a column above (and the format version is bumped).
#[allow(dead_code, reason = "a compile-time check, never called")]
fn every_allocation_field_has_a_column(a: Allocation) {
    let Allocation {
        name: _,
        properties,
        window: _,
        start: _,
        end: _,
        cpu_core_request_average: _,
        cpu_core_usage_average: _,
        cpu_core_limit_average: _,
        cpu_core_hours: _,
        cpu_cost: _,
        cpu_cost_adjustment: _,
        cpu_cost_idle: _,
        gpu_request_average: _,
        gpu_usage_average: _,
        gpu_hours: _,
        gpu_cost: _,
        gpu_cost_adjustment: _,
        gpu_cost_idle: _,
        network_transfer_bytes: _,
        network_receive_bytes: _,
        network_cost: _,
        network_cross_zone_cost: _,
        network_cross_region_cost: _,
        network_internet_cost: _,
        network_cost_adjustment: _,
        load_balancer_cost: _,
        load_balancer_cost_adjustment: _,
        pvs: _,
        pv_cost_adjustment: _,
        ram_byte_request_average: _,
        ram_byte_usage_average: _,
        ram_byte_limit_average: _,
        ram_byte_hours: _,
        ram_cost: _,
        ram_cost_adjustment: _,
        ram_cost_idle: _,
        external_cost: _,
        shared_cost: _,
        cpu_core_usage_max: _,
        ram_byte_usage_max: _,
        lb_allocations: _,
        shared_cost_breakdown: _,
    } = a;
    let crate::model::AllocationProperties {
        cluster: _,
        node: _,
        container: _,
        controller: _,
        controller_kind: _,
        namespace: _,
        pod: _,
        services: _,
        provider_id: _,
        labels: _,
        annotations: _,
        namespace_labels: _,
        namespace_annotations: _,
    } = properties;
    let PvAllocation {
        byte_hours: _,
        cost: _,
        provider_id: _,
    } = PvAllocation::default();
    let LbAllocation {
        service: _,
        cost: _,
        private: _,
        ip: _,
        hours: _,
    } = LbAllocation::default();
    let SharedCostBreakdown {
        name: _,
        total_cost: _,
        cpu_cost: _,
        gpu_cost: _,
        ram_cost: _,
        pv_cost: _,
        network_cost: _,
        load_balancer_cost: _,
        external_cost: _,
    } = SharedCostBreakdown::default();
}

/// Every column of an asset row, in file order (after the set columns).
fn asset_columns() -> Vec<Column<Asset>> {
    type S = Asset;
    vec![
        opt_str_col!(S, "type", kind),
        opt_str_col!(S, "name", name),
        opt_str_col!(S, "cluster", cluster),
        opt_str_col!(S, "provider", provider),
        opt_str_col!(S, "provider_id", provider_id),
        opt_str_col!(S, "category", category),
        opt_str_col!(S, "service", service),
        string_map_col!(S, labels),
        window_col!(S, "asset_window"),
        time_col!(S, "run_start", |r: &S| r.start, |r: &mut S, t| r.start = t),
        time_col!(S, "run_end", |r: &S| r.end, |r: &mut S, t| r.end = t),
        derived_f64_col!(S, "total_cost", |r: &S| r.total_cost()),
        f64_col!(S, adjustment),
        opt_str_col!(S, "node_type", node_type),
        f64_col!(S, preemptible),
        f64_col!(S, cpu_cores),
        f64_col!(S, ram_bytes),
        f64_col!(S, cpu_core_hours),
        f64_col!(S, ram_byte_hours),
        f64_col!(S, gpu_hours),
        f64_col!(S, gpu_count),
        f64_col!(S, cpu_cost),
        f64_col!(S, ram_cost),
        f64_col!(S, gpu_cost),
        f64_col!(S, bytes),
        f64_col!(S, byte_hours),
        opt_str_col!(S, "storage_class", storage_class),
        opt_str_col!(S, "claim_name", claim_name),
        opt_str_col!(S, "claim_namespace", claim_namespace),
        opt_str_col!(S, "ip", ip),
        Column {
            name: "private",
            data_type: || DataType::Boolean,
            nullable: false,
            encode: |rows| {
                Ok(Arc::new(BooleanArray::from(
                    rows.iter().map(|r| r.private).collect::<Vec<bool>>(),
                )))
            },
            decode: Some(|arr, rows, c| {
                let a = downcast::<BooleanArray>(arr, c)?;
                for (i, row) in rows.iter_mut().enumerate() {
                    if a.is_null(i) {
                        return Err(value_err(c, i, "NULL"));
                    }
                    row.private = a.value(i);
                }
                Ok(())
            }),
        },
        f64_col!(S, cost),
        breakdown_col(
            "cpu_breakdown",
            |rows| breakdown_array(rows.iter().map(|a| &a.cpu_breakdown)),
            |arr, rows, c| decode_breakdown(arr, rows, c, |r, b| r.cpu_breakdown = b),
        ),
        breakdown_col(
            "ram_breakdown",
            |rows| breakdown_array(rows.iter().map(|a| &a.ram_breakdown)),
            |arr, rows, c| decode_breakdown(arr, rows, c, |r, b| r.ram_breakdown = b),
        ),
    ]
}

fn breakdown_array<'a>(b: impl Iterator<Item = &'a Breakdown>) -> Result<ArrayRef, EncodeError> {
    Ok(Arc::new(struct_array(
        &breakdown_leaves(),
        &b.collect::<Vec<_>>(),
    )?))
}

fn breakdown_col(
    name: &'static str,
    encode: EncodeFn<Asset>,
    decode: DecodeFn<Asset>,
) -> Column<Asset> {
    Column {
        name,
        data_type: || struct_type(&breakdown_leaves()),
        nullable: false,
        encode,
        decode: Some(decode),
    }
}

fn decode_breakdown(
    arr: &dyn Array,
    rows: &mut [Asset],
    column: &str,
    set: fn(&mut Asset, Breakdown),
) -> Result<(), DecodeError> {
    let a = downcast::<StructArray>(arr, column)?;
    let leaves = breakdown_leaves();
    for (i, row) in rows.iter_mut().enumerate() {
        set(row, struct_value(&leaves, a, i, column, i)?);
    }
    Ok(())
}

/// Compile-time guard: a field added to [`Asset`] fails to build here until it has a column.
#[allow(dead_code, reason = "a compile-time check, never called")]
fn every_asset_field_has_a_column(a: Asset) {
    let Asset {
        kind: _,
        name: _,
        cluster: _,
        provider: _,
        provider_id: _,
        category: _,
        service: _,
        labels: _,
        window: _,
        start: _,
        end: _,
        adjustment: _,
        node_type: _,
        preemptible: _,
        cpu_cores: _,
        ram_bytes: _,
        cpu_core_hours: _,
        ram_byte_hours: _,
        gpu_hours: _,
        gpu_count: _,
        cpu_cost: _,
        ram_cost: _,
        gpu_cost: _,
        bytes: _,
        byte_hours: _,
        storage_class: _,
        claim_name: _,
        claim_namespace: _,
        ip: _,
        private: _,
        cost: _,
        cpu_breakdown: _,
        ram_breakdown: _,
    } = a;
    let Breakdown {
        idle: _,
        other: _,
        system: _,
        user: _,
    } = Breakdown::default();
}

// ---------------------------------------------------------------------------------------------
// Set-level columns and metadata.

/// The set-level facts, each on every row and in the metadata.
struct SetFacts {
    kind: SetKind,
    resolution: Resolution,
    window: Window,
    data_end: DateTime<Utc>,
}

const SET_COLUMNS: [&str; 4] = ["window_start", "window_end", "resolution", "data_end"];

fn set_fields() -> Vec<Field> {
    vec![
        Field::new("window_start", utc_micros(), false),
        Field::new("window_end", utc_micros(), false),
        Field::new("resolution", DataType::Utf8, false),
        Field::new("data_end", utc_micros(), false),
    ]
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

fn set_arrays(facts: &SetFacts, rows: usize) -> Result<Vec<ArrayRef>, EncodeError> {
    let t = |v: DateTime<Utc>, what: &str| -> Result<ArrayRef, EncodeError> {
        let m = micros(v, || what.to_string())?;
        Ok(Arc::new(
            TimestampMicrosecondArray::from(vec![m; rows]).with_timezone("UTC"),
        ))
    };
    Ok(vec![
        t(facts.window.start, "window_start")?,
        t(facts.window.end, "window_end")?,
        Arc::new(StringArray::from(vec![facts.resolution.as_str(); rows])),
        t(facts.data_end, "data_end")?,
    ])
}

fn metadata(facts: &SetFacts) -> Vec<::parquet::file::metadata::KeyValue> {
    use ::parquet::file::metadata::KeyValue;
    vec![
        KeyValue::new(META_FORMAT_VERSION.into(), FORMAT_VERSION.to_string()),
        KeyValue::new(META_KIND.into(), facts.kind.as_str().to_string()),
        KeyValue::new(
            META_RESOLUTION.into(),
            facts.resolution.as_str().to_string(),
        ),
        KeyValue::new(META_WINDOW_START.into(), rfc3339(facts.window.start)),
        KeyValue::new(META_WINDOW_END.into(), rfc3339(facts.window.end)),
        KeyValue::new(META_DATA_END.into(), rfc3339(facts.data_end)),
    ]
}

// ---------------------------------------------------------------------------------------------
// Encode.

/// Encodes a set as a Parquet file. Deterministic: the same set gives the same bytes.
pub fn encode(set: &EtlSet) -> Result<Vec<u8>, EncodeError> {
    match set {
        EtlSet::Allocations(s) => encode_rows(
            &facts_of(set),
            metadata(&facts_of(set)),
            &allocation_columns(),
            &s.allocations.iter().collect::<Vec<_>>(),
        ),
        EtlSet::Assets(s) => encode_rows(
            &facts_of(set),
            metadata(&facts_of(set)),
            &asset_columns(),
            &s.assets.iter().collect::<Vec<_>>(),
        ),
    }
}

fn facts_of(set: &EtlSet) -> SetFacts {
    SetFacts {
        kind: set.kind(),
        resolution: set.resolution(),
        window: set.window(),
        data_end: set.data_end(),
    }
}

/// The Arrow schema of a kind's files.
fn schema<T>(columns: &[Column<T>]) -> Schema {
    let mut fields = set_fields();
    fields.extend(columns.iter().map(Column::field));
    Schema::new(fields)
}

fn encode_rows<T>(
    facts: &SetFacts,
    meta: Vec<::parquet::file::metadata::KeyValue>,
    columns: &[Column<T>],
    rows: &[&T],
) -> Result<Vec<u8>, EncodeError> {
    use ::parquet::basic::{Compression, ZstdLevel};
    use ::parquet::file::properties::{EnabledStatistics, WriterProperties};

    use ::parquet::schema::types::ColumnPath;
    let write_err = |e: ::parquet::errors::ParquetError| EncodeError::Write(e.to_string());
    // Measured on the demo cluster (300 pods, a daily allocation set): these choices give 101 B
    // a row, against 126 B with the library's defaults and 120 B for the JSON form.
    let mut props = WriterProperties::builder()
        .set_created_by(CREATED_BY.into())
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(ZSTD_LEVEL).map_err(write_err)?,
        ))
        // zstd finds the repeats in a column by itself; a dictionary page only adds bytes,
        // except for the few-valued property strings (below), which engines also read faster
        // dictionary-encoded.
        .set_dictionary_enabled(false)
        // Min/max only of the set's times (engines skip files by window with them); other
        // statistics and the page index add a tenth to a file and prune nothing within a set.
        .set_statistics_enabled(EnabledStatistics::None)
        .set_offset_index_disabled(true)
        .set_key_value_metadata(Some(meta));
    for c in ["window_start", "window_end", "data_end"] {
        props = props.set_column_statistics_enabled(ColumnPath::from(c), EnabledStatistics::Chunk);
    }
    let strings = columns
        .iter()
        .filter(|c| (c.data_type)() == DataType::Utf8 && c.name != "name")
        .map(|c| c.name);
    for c in strings.chain(["resolution"]) {
        props = props.set_column_dictionary_enabled(ColumnPath::from(c), true);
    }
    encode_with(facts, columns, rows, props.build())
}

fn encode_with<T>(
    facts: &SetFacts,
    columns: &[Column<T>],
    rows: &[&T],
    props: ::parquet::file::properties::WriterProperties,
) -> Result<Vec<u8>, EncodeError> {
    use ::parquet::arrow::ArrowWriter;
    use ::parquet::arrow::arrow_writer::ArrowWriterOptions;
    let write_err = |e: ::parquet::errors::ParquetError| EncodeError::Write(e.to_string());
    let schema = Arc::new(schema(columns));
    let mut arrays = set_arrays(facts, rows.len())?;
    for c in columns {
        arrays.push((c.encode)(rows)?);
    }
    let batch = RecordBatch::try_new(schema.clone(), arrays)
        .map_err(|e| EncodeError::Write(e.to_string()))?;
    // Without the embedded Arrow schema: the Parquet schema says it all, and a base64 copy of
    // it would be a large part of a small hourly file.
    let options = ArrowWriterOptions::new()
        .with_properties(props)
        .with_skip_arrow_metadata(true);
    let mut writer =
        ArrowWriter::try_new_with_options(Vec::new(), schema, options).map_err(write_err)?;
    writer.write(&batch).map_err(write_err)?;
    writer.into_inner().map_err(write_err)
}

/// Whether `encode` can write `set` exactly (every time a whole microsecond within range).
pub fn fits(set: &EtlSet) -> bool {
    let ok = |t: DateTime<Utc>| t.timestamp_subsec_nanos().is_multiple_of(1000);
    let ok_opt = |t: Option<DateTime<Utc>>| t.is_none_or(ok);
    let ok_win = |w: Option<Window>| w.is_none_or(|w| ok(w.start) && ok(w.end));
    ok(set.window().start)
        && ok(set.window().end)
        && ok(set.data_end())
        && match set {
            EtlSet::Allocations(s) => s
                .allocations
                .iter()
                .all(|a| ok_win(a.window) && ok_opt(a.start) && ok_opt(a.end)),
            EtlSet::Assets(s) => s
                .assets
                .iter()
                .all(|a| ok_win(a.window) && ok_opt(a.start) && ok_opt(a.end)),
        }
}

// ---------------------------------------------------------------------------------------------
// Decode.

/// A Parquet file read into Arrow batches, with its set-level facts.
struct Read {
    facts: SetFacts,
    file_schema: Arc<Schema>,
    batches: Vec<RecordBatch>,
}

fn read(body: &[u8]) -> Result<Read, DecodeError> {
    use ::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    if !is_parquet(body) {
        return Err(DecodeError::NotParquet);
    }
    let read_err = |e: ::parquet::errors::ParquetError| DecodeError::Read(e.to_string());
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::copy_from_slice(body))
        .map_err(read_err)?;
    let meta: BTreeMap<String, Option<String>> = builder
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .map(|kv| {
            kv.iter()
                .map(|k| (k.key.clone(), k.value.clone()))
                .collect()
        })
        .unwrap_or_default();
    let facts = read_facts(&meta)?;
    let file_schema = builder.schema().clone();
    let reader = builder
        .with_batch_size(BATCH_ROWS)
        .build()
        .map_err(read_err)?;
    let mut batches = Vec::new();
    for b in reader {
        batches.push(b.map_err(|e| DecodeError::Read(e.to_string()))?);
    }
    Ok(Read {
        facts,
        file_schema,
        batches,
    })
}

impl Read {
    fn into_set(self) -> Result<EtlSet, DecodeError> {
        let Read {
            facts,
            file_schema,
            batches,
        } = self;
        match facts.kind {
            SetKind::Allocations => {
                let allocations =
                    decode_rows(&facts, &allocation_columns(), &file_schema, &batches)?;
                Ok(EtlSet::Allocations(AllocationSet {
                    window: facts.window,
                    resolution: facts.resolution,
                    data_end: facts.data_end,
                    allocations,
                }))
            }
            SetKind::Assets => {
                let assets = decode_rows(&facts, &asset_columns(), &file_schema, &batches)?;
                Ok(EtlSet::Assets(AssetSet {
                    window: facts.window,
                    resolution: facts.resolution,
                    data_end: facts.data_end,
                    assets,
                }))
            }
        }
    }
}

/// Decodes a Parquet file this codec wrote.
pub fn decode(body: &[u8]) -> Result<EtlSet, DecodeError> {
    read(body)?.into_set()
}

/// Decodes an asset set's Parquet object (what a packed [`crate::model::StoredAssets`] is
/// unpacked with).
pub fn decode_assets(body: &[u8]) -> Result<AssetSet, String> {
    match decode(body) {
        Ok(EtlSet::Assets(s)) => Ok(s),
        Ok(EtlSet::Allocations(_)) => Err("an allocation set, not an asset set".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// A set decoded for serving: allocations in columns, assets as they are.
#[derive(Debug)]
pub enum Decoded {
    /// An allocation set.
    Allocations(Box<AllocationColumns>),
    /// An asset set.
    Assets(AssetSet),
}

/// Decodes a Parquet file this codec wrote into the form a snapshot serves: an allocation set
/// goes from Arrow's columns into [`AllocationColumns`] without building an `Allocation` per
/// row (the strings and maps of a row are read where they lie), which is several times faster
/// and allocates a fraction of the memory. Gives exactly
/// `AllocationColumns::from_set(decode(body))` and refuses exactly what [`decode`] refuses.
pub fn decode_columns(body: &[u8], interner: &PodInterner) -> Result<Decoded, DecodeError> {
    let r = read(body)?;
    if r.facts.kind == SetKind::Allocations
        && let Some(c) = allocation_columns_of(&r, interner)?
    {
        return Ok(Decoded::Allocations(Box::new(c)));
    }
    Ok(match r.into_set()? {
        EtlSet::Allocations(s) => {
            Decoded::Allocations(Box::new(AllocationColumns::from_set(s, interner)))
        }
        EtlSet::Assets(s) => Decoded::Assets(s),
    })
}

/// The columns [`allocation_columns_of`] reads itself; the others go through the row decoder.
const PROPERTY_COLUMNS: [&str; 14] = [
    "name",
    "cluster",
    "node",
    "controller",
    "controller_kind",
    "namespace",
    "pod",
    "provider_id",
    "container",
    "services",
    "labels",
    "annotations",
    "namespace_labels",
    "namespace_annotations",
];

/// A row's services and maps where they lie in the batch's arrays.
struct ArrowMeta<'a> {
    services: (&'a StringArray, std::ops::Range<usize>),
    maps: [(&'a StringArray, &'a StringArray, std::ops::Range<usize>); 4],
}

impl MetaSource for ArrowMeta<'_> {
    fn services(&self) -> impl Iterator<Item = &str> {
        let (a, r) = &self.services;
        r.clone().map(|j| a.value(j))
    }
    fn map(&self, which: usize) -> impl Iterator<Item = (&str, &str)> {
        let (k, v, r) = &self.maps[which];
        r.clone().map(|j| (k.value(j), v.value(j)))
    }
}

fn column<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a dyn Array, DecodeError> {
    batch
        .column_by_name(name)
        .map(AsRef::as_ref)
        .ok_or_else(|| DecodeError::Schema {
            column: name.to_string(),
            problem: "missing".into(),
        })
}

/// A map column's keys and values, checked for NULLs once for the whole batch.
fn map_parts<'a>(
    batch: &'a RecordBatch,
    name: &str,
) -> Result<(&'a MapArray, &'a StringArray, &'a StringArray), DecodeError> {
    let a = downcast::<MapArray>(column(batch, name)?, name)?;
    let keys = downcast::<StringArray>(a.keys().as_ref(), name)?;
    let values = downcast::<StringArray>(a.values().as_ref(), name)?;
    if let Some(i) = (0..a.len()).find(|&i| a.is_null(i)) {
        return Err(value_err(name, i, "NULL map"));
    }
    if keys.null_count() > 0 || values.null_count() > 0 {
        // Found again row by row below, to name the row.
        let offs = a.value_offsets();
        for i in 0..a.len() {
            let (s, e) = entry_range(offs, i, keys.len(), name)?;
            if (s..e).any(|j| keys.is_null(j)) {
                return Err(value_err(name, i, "NULL map key"));
            }
            if (s..e).any(|j| values.is_null(j)) {
                return Err(value_err(name, i, "NULL map value"));
            }
        }
    }
    Ok((a, keys, values))
}

/// Reads an allocation set's property columns straight into a [`ColumnsBuilder`] (the other
/// columns, mostly numbers, through the row decoder into property-less rows). `None` when a
/// map's entries are not in strictly increasing key order, which this codec never writes: the
/// row decoder then normalises or refuses them as it always has.
fn allocation_columns_of(
    r: &Read,
    interner: &PodInterner,
) -> Result<Option<AllocationColumns>, DecodeError> {
    let columns = allocation_columns();
    check_schema(&r.facts, &columns, &r.file_schema)?;
    let rows = r.batches.iter().map(RecordBatch::num_rows).sum();
    let mut b = ColumnsBuilder::new(
        r.facts.window,
        r.facts.resolution,
        r.facts.data_end,
        rows,
        interner,
    );
    let mut first_row = 0;
    for batch in &r.batches {
        let values = decode_batch(&r.facts, &columns, batch, first_row, &PROPERTY_COLUMNS)?;
        let with_row = |e: DecodeError| e.in_file(first_row);
        let mut strings = [None; 9];
        for (k, name) in PROPERTY_COLUMNS[..9].iter().enumerate() {
            let a = downcast::<StringArray>(column(batch, name)?, name)?;
            if let Some(i) = (0..a.len()).find(|&i| a.is_valid(i) && a.value(i).is_empty()) {
                return Err(with_row(value_err(
                    name,
                    i,
                    "an empty string (unset is NULL)",
                )));
            }
            strings[k] = Some(a);
        }
        let strings = strings.map(|a| a.expect("every property column was read"));
        let services = downcast::<ListArray>(column(batch, "services")?, "services")?;
        let service_names = downcast::<StringArray>(services.values().as_ref(), "services")?;
        if let Some(i) = (0..services.len()).find(|&i| services.is_null(i)) {
            return Err(with_row(value_err("services", i, "NULL list")));
        }
        if service_names.null_count() > 0 {
            let offs = services.value_offsets();
            for i in 0..services.len() {
                let (s, e) =
                    entry_range(offs, i, service_names.len(), "services").map_err(with_row)?;
                if (s..e).any(|j| service_names.is_null(j)) {
                    return Err(with_row(value_err("services", i, "NULL list element")));
                }
            }
        }
        let maps = [
            map_parts(batch, "labels").map_err(with_row)?,
            map_parts(batch, "annotations").map_err(with_row)?,
            map_parts(batch, "namespace_labels").map_err(with_row)?,
            map_parts(batch, "namespace_annotations").map_err(with_row)?,
        ];
        for (i, v) in values.iter().enumerate() {
            let s = |k: usize| {
                let a = strings[k];
                if a.is_valid(i) { a.value(i) } else { "" }
            };
            let row = RowStrings {
                name: s(0),
                cluster: s(1),
                node: s(2),
                controller: s(3),
                controller_kind: s(4),
                namespace: s(5),
                pod: s(6),
                provider_id: s(7),
                container: s(8),
            };
            let (ss, se) =
                entry_range(services.value_offsets(), i, service_names.len(), "services")
                    .map_err(with_row)?;
            let mut ranges = [0..0, 0..0, 0..0, 0..0];
            for (k, (a, keys, _)) in maps.iter().enumerate() {
                let name = [
                    "labels",
                    "annotations",
                    "namespace_labels",
                    "namespace_annotations",
                ][k];
                let (s, e) =
                    entry_range(a.value_offsets(), i, keys.len(), name).map_err(with_row)?;
                if (s + 1..e).any(|j| keys.value(j - 1) >= keys.value(j)) {
                    return Ok(None);
                }
                ranges[k] = s..e;
            }
            let [r0, r1, r2, r3] = ranges;
            let meta = ArrowMeta {
                services: (service_names, ss..se),
                maps: [
                    (maps[0].1, maps[0].2, r0),
                    (maps[1].1, maps[1].2, r1),
                    (maps[2].1, maps[2].2, r2),
                    (maps[3].1, maps[3].2, r3),
                ],
            };
            b.push(&row, &meta, v);
        }
        first_row += batch.num_rows();
    }
    Ok(Some(b.finish()))
}

fn read_facts(meta: &BTreeMap<String, Option<String>>) -> Result<SetFacts, DecodeError> {
    let get = |key: &'static str| -> Result<&str, DecodeError> {
        meta.get(key)
            .and_then(|v| v.as_deref())
            .ok_or(DecodeError::Metadata {
                key,
                problem: "missing".into(),
            })
    };
    let bad = |key: &'static str, problem: String| DecodeError::Metadata { key, problem };
    let version: u32 = get(META_FORMAT_VERSION)?
        .parse()
        .map_err(|_| bad(META_FORMAT_VERSION, "not a number".into()))?;
    if version > FORMAT_VERSION {
        return Err(DecodeError::NewerFormat {
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    if version == 0 {
        return Err(bad(META_FORMAT_VERSION, "version 0 does not exist".into()));
    }
    let kind = match get(META_KIND)? {
        "allocations" => SetKind::Allocations,
        "assets" => SetKind::Assets,
        other => return Err(bad(META_KIND, format!("unknown kind {other:?}"))),
    };
    let resolution = match get(META_RESOLUTION)? {
        "1h" => Resolution::Hour,
        "1d" => Resolution::Day,
        other => {
            return Err(bad(
                META_RESOLUTION,
                format!("unknown resolution {other:?}"),
            ));
        }
    };
    let time = |key: &'static str| -> Result<DateTime<Utc>, DecodeError> {
        DateTime::parse_from_rfc3339(get(key)?)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| bad(key, e.to_string()))
    };
    let (start, end) = (time(META_WINDOW_START)?, time(META_WINDOW_END)?);
    if start > end {
        return Err(bad(META_WINDOW_END, "before the window start".into()));
    }
    Ok(SetFacts {
        kind,
        resolution,
        window: Window { start, end },
        data_end: time(META_DATA_END)?,
    })
}

fn decode_rows<T: Default>(
    facts: &SetFacts,
    columns: &[Column<T>],
    file_schema: &Schema,
    batches: &[RecordBatch],
) -> Result<Vec<T>, DecodeError> {
    check_schema(facts, columns, file_schema)?;
    let mut out: Vec<T> = Vec::new();
    let mut first_row = 0;
    for batch in batches {
        out.extend(decode_batch(facts, columns, batch, first_row, &[])?);
        first_row += batch.num_rows();
    }
    Ok(out)
}

/// Refuses a file whose columns are not exactly `columns`, with their types.
fn check_schema<T>(
    facts: &SetFacts,
    columns: &[Column<T>],
    file_schema: &Schema,
) -> Result<(), DecodeError> {
    let want = schema(columns);
    for f in want.fields() {
        match file_schema.field_with_name(f.name()) {
            Err(_) => {
                return Err(DecodeError::Schema {
                    column: f.name().clone(),
                    problem: format!("missing from this {} file", facts.kind.as_str()),
                });
            }
            Ok(got) if !same_type(got, f) => {
                return Err(DecodeError::Schema {
                    column: f.name().clone(),
                    problem: format!(
                        "is {}{}, expected {}{}",
                        got.data_type(),
                        if got.is_nullable() { "" } else { " NOT NULL" },
                        f.data_type(),
                        if f.is_nullable() { "" } else { " NOT NULL" }
                    ),
                });
            }
            Ok(_) => {}
        }
    }
    if let Some(extra) = file_schema
        .fields()
        .iter()
        .find(|f| want.field_with_name(f.name()).is_err())
    {
        return Err(DecodeError::Schema {
            column: extra.name().clone(),
            problem: format!("not a column of {} files", facts.kind.as_str()),
        });
    }
    Ok(())
}

/// Decodes one batch's rows (`first_row` is the batch's first row in the file, for errors),
/// leaving the columns named in `skip` at their defaults.
fn decode_batch<T: Default>(
    facts: &SetFacts,
    columns: &[Column<T>],
    batch: &RecordBatch,
    first_row: usize,
    skip: &[&str],
) -> Result<Vec<T>, DecodeError> {
    let mut rows: Vec<T> = (0..batch.num_rows()).map(|_| T::default()).collect();
    check_set_columns(facts, batch, first_row)?;
    for c in columns {
        let Some(decode) = c.decode else { continue };
        if skip.contains(&c.name) {
            continue;
        }
        decode(column(batch, c.name)?, &mut rows, c.name).map_err(|e| e.in_file(first_row))?;
    }
    Ok(rows)
}

/// Same type and nullability, nested fields included.
fn same_type(got: &Field, want: &Field) -> bool {
    got.data_type() == want.data_type() && got.is_nullable() == want.is_nullable()
}

/// The set columns of every row must say what the metadata says.
fn check_set_columns(
    facts: &SetFacts,
    batch: &RecordBatch,
    first_row: usize,
) -> Result<(), DecodeError> {
    let micros_of = |t: DateTime<Utc>| t.timestamp_micros();
    let expect_time = |name: &str, want: DateTime<Utc>| -> Result<(), DecodeError> {
        let arr = batch
            .column_by_name(name)
            .ok_or_else(|| DecodeError::Schema {
                column: name.to_string(),
                problem: "missing".into(),
            })?;
        let a = downcast::<TimestampMicrosecondArray>(arr.as_ref(), name)?;
        for i in 0..a.len() {
            if a.is_null(i) || a.value(i) != micros_of(want) {
                return Err(value_err(
                    name,
                    first_row + i,
                    "disagrees with the metadata",
                ));
            }
        }
        Ok(())
    };
    expect_time(SET_COLUMNS[0], facts.window.start)?;
    expect_time(SET_COLUMNS[1], facts.window.end)?;
    expect_time(SET_COLUMNS[3], facts.data_end)?;
    let name = SET_COLUMNS[2];
    let arr = batch
        .column_by_name(name)
        .ok_or_else(|| DecodeError::Schema {
            column: name.to_string(),
            problem: "missing".into(),
        })?;
    let a = downcast::<StringArray>(arr.as_ref(), name)?;
    for i in 0..a.len() {
        if a.is_null(i) || a.value(i) != facts.resolution.as_str() {
            return Err(value_err(
                name,
                first_row + i,
                "disagrees with the metadata",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::etl::{costing, demo::DemoCluster};
    use crate::model::AllocationProperties;
    use chrono::{Duration, TimeZone};

    fn t(h: u32, m: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 24, h, m, s).unwrap()
    }

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn day() -> Window {
        Window {
            start: t(0, 0, 0),
            end: t(0, 0, 0) + Duration::days(1),
        }
    }

    /// An allocation with every field set, each float distinct, odd values included.
    fn rich_allocation(i: u32) -> Allocation {
        let f = |n: u32| f64::from(i) * 1000.0 + f64::from(n) + 0.1 / 3.0;
        Allocation {
            name: format!("cluster-one/node-{i}/ns/pod-{i}/app"),
            properties: AllocationProperties {
                cluster: "cluster-one".into(),
                node: format!("node-{i}"),
                container: "app".into(),
                controller: "web".into(),
                controller_kind: "deployment".into(),
                namespace: "ns".into(),
                pod: format!("pod-{i}"),
                services: vec!["web".into(), "web-internal".into(), "".into()],
                provider_id: "i-0abc".into(),
                labels: map(&[("app", "web"), ("empty", ""), ("ünïcödé", "✓ \"quoted\"")]),
                annotations: map(&[("owner", "team-a")]),
                namespace_labels: map(&[("team", "a")]),
                namespace_annotations: map(&[("cost_center", "42")]),
            },
            window: Some(day()),
            start: Some(t(0, 5, 0)),
            end: Some(t(23, 59, 59) + Duration::microseconds(123_456)),
            cpu_core_request_average: f(1),
            cpu_core_usage_average: f(2),
            cpu_core_limit_average: f(3),
            cpu_core_hours: f(4),
            cpu_cost: f(5),
            cpu_cost_adjustment: -f(6),
            cpu_cost_idle: f(7),
            gpu_request_average: f(8),
            gpu_usage_average: f(9),
            gpu_hours: f(10),
            gpu_cost: f(11),
            gpu_cost_adjustment: f(12),
            gpu_cost_idle: f(13),
            network_transfer_bytes: f(14),
            network_receive_bytes: f(15),
            network_cost: f(16),
            network_cross_zone_cost: f(17),
            network_cross_region_cost: f(18),
            network_internet_cost: f(19),
            network_cost_adjustment: f(20),
            load_balancer_cost: f(21),
            load_balancer_cost_adjustment: f(22),
            pvs: [
                (
                    "cluster=cluster-one:name=pv-a".to_string(),
                    PvAllocation {
                        byte_hours: f(23),
                        cost: f(24),
                        provider_id: "vol-1".into(),
                    },
                ),
                (
                    "cluster=cluster-one:name=pv-b".to_string(),
                    PvAllocation {
                        byte_hours: 0.0,
                        cost: 1e-300,
                        provider_id: String::new(),
                    },
                ),
            ]
            .into(),
            pv_cost_adjustment: f(25),
            ram_byte_request_average: f(26) * 1e9,
            ram_byte_usage_average: f(27) * 1e9,
            ram_byte_limit_average: f(28) * 1e9,
            ram_byte_hours: f(29) * 1e10,
            ram_cost: f(30),
            ram_cost_adjustment: f(31),
            ram_cost_idle: f(32),
            external_cost: f(33),
            shared_cost: f(34),
            cpu_core_usage_max: f(35),
            ram_byte_usage_max: f(36),
            lb_allocations: [(
                "ns/web".to_string(),
                LbAllocation {
                    service: "ns/web".into(),
                    cost: f(37),
                    private: true,
                    ip: "10.0.0.1".into(),
                    hours: 24.0,
                },
            )]
            .into(),
            shared_cost_breakdown: [(
                "kube-system".to_string(),
                SharedCostBreakdown {
                    name: "kube-system".into(),
                    total_cost: f(38),
                    cpu_cost: f(39),
                    gpu_cost: f(40),
                    ram_cost: f(41),
                    pv_cost: f(42),
                    network_cost: f(43),
                    load_balancer_cost: f(44),
                    external_cost: f(45),
                },
            )]
            .into(),
        }
    }

    fn rich_allocations() -> EtlSet {
        let mut sparse = Allocation {
            name: "cluster-one/node-9/__idle__".into(),
            cpu_cost: 0.5,
            ..Allocation::default()
        };
        sparse.properties.node = "node-9".into();
        let mut half = rich_allocation(2);
        half.window = None;
        half.start = None;
        EtlSet::Allocations(AllocationSet {
            window: day(),
            resolution: Resolution::Day,
            data_end: t(17, 3, 0) + Duration::milliseconds(7),
            allocations: vec![
                rich_allocation(1),
                sparse,
                half,
                Allocation::default(),
                rich_allocation(3),
            ],
        })
    }

    fn rich_assets() -> EtlSet {
        let node = Asset {
            kind: "Node".into(),
            name: "node-1".into(),
            cluster: "cluster-one".into(),
            provider: "aws".into(),
            provider_id: "i-0abc".into(),
            category: "Compute".into(),
            service: "Kubernetes".into(),
            labels: map(&[("kubernetes.io/arch", "amd64"), ("spot", "")]),
            window: Some(day()),
            start: Some(t(0, 0, 0)),
            end: Some(t(12, 0, 0)),
            adjustment: -0.25,
            node_type: "m5.large".into(),
            preemptible: 1.0,
            cpu_cores: 2.0,
            ram_bytes: 8.0 * 1024.0 * 1024.0 * 1024.0,
            cpu_core_hours: 24.0,
            ram_byte_hours: 1e11 / 3.0,
            gpu_hours: 0.0,
            gpu_count: 0.0,
            cpu_cost: 0.1 + 0.2,
            ram_cost: 1.0 / 7.0,
            gpu_cost: 0.0,
            cpu_breakdown: Breakdown {
                idle: 0.5,
                other: 0.1,
                system: 0.15,
                user: 0.25,
            },
            ram_breakdown: Breakdown {
                idle: 0.7,
                other: 0.0,
                system: 0.1,
                user: 0.2,
            },
            ..Asset::default()
        };
        let disk = Asset {
            kind: "Disk".into(),
            name: "pv-a".into(),
            bytes: 1e10,
            byte_hours: 2.4e11,
            storage_class: "gp3".into(),
            claim_name: "data".into(),
            claim_namespace: "db".into(),
            cost: 0.0123,
            window: None,
            ..Asset::default()
        };
        let lb = Asset {
            kind: "LoadBalancer".into(),
            name: "ns/web".into(),
            ip: "10.0.0.1".into(),
            private: true,
            cost: 0.6,
            ..Asset::default()
        };
        EtlSet::Assets(AssetSet {
            window: day(),
            resolution: Resolution::Day,
            data_end: day().end,
            assets: vec![node, disk, lb],
        })
    }

    fn demo_sets(pods: usize) -> Vec<EtlSet> {
        let c = DemoCluster::new(7, pods);
        let day = Resolution::Day.window_containing(t(12, 0, 0));
        let hour = Window::new(day.start, day.start + Duration::hours(1));
        let mut out = Vec::new();
        for (res, w) in [(Resolution::Day, day), (Resolution::Hour, hour)] {
            let (a, s) = costing::price(&c.compute(w, w.end), res, "cluster-one");
            out.push(EtlSet::Allocations(a));
            out.push(EtlSet::Assets(s));
        }
        out
    }

    /// [`decode`], checked against [`decode_columns`]: the same set in columns, or the same
    /// error.
    fn both(body: &[u8]) -> Result<EtlSet, DecodeError> {
        let rows = decode(body);
        let interner = PodInterner::default();
        match (&rows, decode_columns(body, &interner)) {
            (Ok(EtlSet::Allocations(s)), Ok(Decoded::Allocations(c))) => {
                // Built row by row the same way, so alike down to their string ids (and NaN
                // payloads print alike, where `==` would fail on any NaN).
                let from_rows = AllocationColumns::from_set(s.clone(), &interner);
                assert_eq!(format!("{c:?}"), format!("{from_rows:?}"));
            }
            (Ok(EtlSet::Assets(s)), Ok(Decoded::Assets(a))) => assert_eq!(&a, s),
            (Err(e), Err(f)) => assert_eq!(e, &f),
            (r, c) => panic!("decode gave {r:?}, decode_columns {c:?}"),
        }
        rows
    }

    #[test]
    fn rich_sets_round_trip_exactly() {
        for set in [rich_allocations(), rich_assets()] {
            let body = encode(&set).unwrap();
            assert!(is_parquet(&body));
            assert_eq!(both(&body).unwrap(), set);
            // The JSON the model writes is equal too: nothing lost that equality might miss.
            assert_eq!(
                serde_json::to_string(&both(&body).unwrap()).unwrap(),
                serde_json::to_string(&set).unwrap()
            );
        }
    }

    #[test]
    fn demo_sets_round_trip_exactly_and_encode_deterministically() {
        for set in demo_sets(60) {
            let body = encode(&set).unwrap();
            assert_eq!(both(&body).unwrap(), set);
            assert_eq!(encode(&set).unwrap(), body, "same set, same bytes");
        }
    }

    #[test]
    fn empty_sets_round_trip() {
        let w = Window::new(t(3, 0, 0), t(4, 0, 0));
        for set in [
            EtlSet::Allocations(AllocationSet {
                window: w,
                resolution: Resolution::Hour,
                data_end: t(3, 30, 0),
                allocations: vec![],
            }),
            EtlSet::Assets(AssetSet {
                window: w,
                resolution: Resolution::Hour,
                data_end: w.end,
                assets: vec![],
            }),
        ] {
            assert_eq!(both(&encode(&set).unwrap()).unwrap(), set);
        }
    }

    #[test]
    fn every_float_is_kept_bit_for_bit() {
        let odd = [
            -0.0,
            0.0,
            f64::NAN,
            -f64::NAN,
            f64::from_bits(0x7ff8_0000_dead_beef),
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::MIN_POSITIVE / 3.0,
            f64::MAX,
            f64::EPSILON,
        ];
        let allocations = odd
            .iter()
            .map(|&v| Allocation {
                cpu_cost: v,
                ram_byte_hours: v,
                pvs: [(
                    "pv".to_string(),
                    PvAllocation {
                        cost: v,
                        ..PvAllocation::default()
                    },
                )]
                .into(),
                ..Allocation::default()
            })
            .collect();
        let set = EtlSet::Allocations(AllocationSet {
            window: day(),
            resolution: Resolution::Day,
            data_end: day().end,
            allocations,
        });
        let EtlSet::Allocations(back) = both(&encode(&set).unwrap()).unwrap() else {
            panic!("an allocation set")
        };
        for (a, &v) in back.allocations.iter().zip(&odd) {
            assert_eq!(a.cpu_cost.to_bits(), v.to_bits());
            assert_eq!(a.ram_byte_hours.to_bits(), v.to_bits());
            assert_eq!(a.pvs["pv"].cost.to_bits(), v.to_bits());
        }
    }

    #[test]
    fn sub_microsecond_times_are_refused_not_rounded() {
        let EtlSet::Allocations(mut s) = rich_allocations() else {
            unreachable!()
        };
        s.allocations[0].end = Some(t(1, 0, 0) + Duration::nanoseconds(1));
        let set = EtlSet::Allocations(s);
        assert!(!fits(&set));
        assert!(matches!(encode(&set), Err(EncodeError::Inexact { .. })));
        let EtlSet::Assets(mut a) = rich_assets() else {
            unreachable!()
        };
        a.data_end = day().start + Duration::nanoseconds(1500);
        let set = EtlSet::Assets(a);
        assert!(!fits(&set));
        assert!(matches!(encode(&set), Err(EncodeError::Inexact { .. })));
        assert!(fits(&rich_allocations()) && fits(&rich_assets()));
    }

    /// Reads `body` back as Arrow, lets `change` rework the columns and metadata, and writes it
    /// again: a file of the codec's layout with one thing wrong.
    fn rewrite(
        body: &[u8],
        change: impl FnOnce(&mut Vec<Field>, &mut Vec<ArrayRef>, &mut Vec<(String, String)>),
    ) -> Vec<u8> {
        use ::parquet::arrow::ArrowWriter;
        use ::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
        use ::parquet::file::metadata::KeyValue;
        use ::parquet::file::properties::WriterProperties;
        let builder =
            ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::copy_from_slice(body)).unwrap();
        let mut meta: Vec<(String, String)> = builder
            .metadata()
            .file_metadata()
            .key_value_metadata()
            .unwrap()
            .iter()
            .map(|kv| (kv.key.clone(), kv.value.clone().unwrap()))
            .collect();
        let batches: Vec<RecordBatch> = builder.build().unwrap().map(Result::unwrap).collect();
        let batch = &batches[0];
        let mut fields: Vec<Field> = batch
            .schema()
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        let mut arrays: Vec<ArrayRef> = batch.columns().to_vec();
        change(&mut fields, &mut arrays, &mut meta);
        let schema = Arc::new(Schema::new(fields));
        let batch = RecordBatch::try_new(schema.clone(), arrays).unwrap();
        let props = WriterProperties::builder()
            .set_key_value_metadata(Some(
                meta.into_iter().map(|(k, v)| KeyValue::new(k, v)).collect(),
            ))
            .build();
        let mut w = ArrowWriter::try_new(Vec::new(), schema, Some(props)).unwrap();
        w.write(&batch).unwrap();
        w.into_inner().unwrap()
    }

    fn index(fields: &[Field], name: &str) -> usize {
        fields.iter().position(|f| f.name() == name).unwrap()
    }

    #[test]
    fn an_unchanged_rewrite_still_decodes() {
        // The malformed files below differ from a good one only in what each test changes.
        let body = encode(&rich_allocations()).unwrap();
        assert_eq!(
            decode(&rewrite(&body, |_, _, _| {})).unwrap(),
            rich_allocations()
        );
    }

    #[test]
    fn malformed_files_are_refused_with_typed_errors() {
        let body = encode(&rich_allocations()).unwrap();
        // Not Parquet at all, or cut short.
        assert_eq!(
            both(b"{\"kind\":\"allocations\"}"),
            Err(DecodeError::NotParquet)
        );
        assert_eq!(both(b""), Err(DecodeError::NotParquet));
        assert_eq!(both(&body[..body.len() / 2]), Err(DecodeError::NotParquet));
        let mut garbled = body.clone();
        let n = garbled.len();
        garbled[4..n - 8].fill(0xAB);
        assert!(
            matches!(both(&garbled), Err(DecodeError::Read(_))),
            "{:?}",
            both(&garbled)
        );
        let mut footer = body.clone();
        footer[n - 6] ^= 0xFF;
        assert!(both(&footer).is_err());

        // A missing column.
        let missing = rewrite(&body, |f, a, _| {
            let i = index(f, "cpu_cost");
            f.remove(i);
            a.remove(i);
        });
        assert!(
            matches!(both(&missing), Err(DecodeError::Schema { ref column, .. }) if column == "cpu_cost"),
            "{:?}",
            both(&missing)
        );
        // An extra one.
        let extra = rewrite(&body, |f, a, _| {
            f.push(Field::new("surprise", DataType::Float64, false));
            a.push(Arc::new(Float64Array::from(vec![1.0; 5])));
        });
        assert!(
            matches!(both(&extra), Err(DecodeError::Schema { ref column, .. }) if column == "surprise")
        );
        // A retyped one.
        let retyped = rewrite(&body, |f, a, _| {
            let i = index(f, "cpu_cost");
            f[i] = Field::new("cpu_cost", DataType::Utf8, false);
            a[i] = Arc::new(StringArray::from(vec!["1"; 5]));
        });
        assert!(
            matches!(both(&retyped), Err(DecodeError::Schema { ref column, .. }) if column == "cpu_cost")
        );
        // Naive (not UTC) times.
        let naive = rewrite(&body, |f, a, _| {
            let i = index(f, "run_start");
            f[i] = Field::new(
                "run_start",
                DataType::Timestamp(TimeUnit::Microsecond, None),
                true,
            );
            a[i] = Arc::new(TimestampMicrosecondArray::from(vec![0; 5]));
        });
        assert!(matches!(both(&naive), Err(DecodeError::Schema { .. })));
        // A NULL where the format has none.
        let null = rewrite(&body, |f, a, _| {
            let i = index(f, "cpu_cost");
            f[i] = Field::new("cpu_cost", DataType::Float64, true);
            a[i] = Arc::new(Float64Array::from(vec![Some(1.0), None, None, None, None]));
        });
        assert!(matches!(both(&null), Err(DecodeError::Schema { .. })));
        // Rows that disagree with the metadata on the set's window.
        let moved = rewrite(&body, |f, a, _| {
            let i = index(f, "window_start");
            a[i] = Arc::new(TimestampMicrosecondArray::from(vec![0; 5]).with_timezone("UTC"));
        });
        assert!(
            matches!(both(&moved), Err(DecodeError::Value { ref column, row: 0, .. }) if column == "window_start"),
            "{:?}",
            both(&moved)
        );
        // Duplicate map keys cannot come from a map, so a file holding them is refused.
        let dup = rewrite(&body, |f, a, _| {
            let i = index(f, "labels");
            let keys = StringArray::from(vec!["k", "k"]);
            let values = StringArray::from(vec!["a", "b"]);
            let DataType::Map(entries, _) = string_map() else {
                unreachable!()
            };
            let DataType::Struct(fields) = entries.data_type().clone() else {
                unreachable!()
            };
            let s =
                StructArray::try_new(fields, vec![Arc::new(keys), Arc::new(values)], None).unwrap();
            let offsets = OffsetBuffer::from_lengths([2, 0, 0, 0, 0]);
            a[i] = Arc::new(MapArray::try_new(entries, offsets, s, None, false).unwrap());
            f[i] = Field::new("labels", string_map(), false);
        });
        assert!(
            matches!(both(&dup), Err(DecodeError::Value { ref column, row: 0, ref problem }) if column == "labels" && problem.contains("duplicate")),
            "{:?}",
            both(&dup)
        );
    }

    #[test]
    fn metadata_is_checked_newer_versions_and_the_other_kind_are_refused() {
        let body = encode(&rich_allocations()).unwrap();
        let with = |key: &str, value: Option<&str>| {
            rewrite(&body, |_, _, m| {
                m.retain(|(k, _)| k != key);
                if let Some(v) = value {
                    m.push((key.to_string(), v.to_string()));
                }
            })
        };
        assert_eq!(
            both(&with(META_FORMAT_VERSION, Some("2"))),
            Err(DecodeError::NewerFormat {
                found: 2,
                supported: FORMAT_VERSION
            })
        );
        for (key, value) in [
            (META_FORMAT_VERSION, None),
            (META_FORMAT_VERSION, Some("one")),
            (META_FORMAT_VERSION, Some("0")),
            (META_KIND, None),
            (META_KIND, Some("cloudCosts")),
            (META_RESOLUTION, Some("1w")),
            (META_WINDOW_START, Some("yesterday")),
            (META_WINDOW_END, Some("2000-01-01T00:00:00Z")),
            (META_DATA_END, None),
        ] {
            assert!(
                matches!(both(&with(key, value)), Err(DecodeError::Metadata { key: k, .. }) if k == key),
                "{key}={value:?}: {:?}",
                both(&with(key, value))
            );
        }
        // An allocation file that says it holds assets, and the reverse: the columns give it away.
        let as_assets = with(META_KIND, Some("assets"));
        assert!(
            matches!(both(&as_assets), Err(DecodeError::Schema { .. })),
            "{:?}",
            both(&as_assets)
        );
        let assets = encode(&rich_assets()).unwrap();
        let as_allocations = rewrite(&assets, |_, _, m| {
            for (k, v) in m.iter_mut() {
                if k == META_KIND {
                    *v = "allocations".into();
                }
            }
        });
        assert!(matches!(
            both(&as_allocations),
            Err(DecodeError::Schema { .. })
        ));
        // The set columns must agree with the metadata (a window the rows do not carry).
        let shifted = with(META_WINDOW_START, Some("2026-11-23T00:00:00Z"));
        assert!(matches!(both(&shifted), Err(DecodeError::Value { .. })));
    }

    /// Bytes per allocation row, Parquet against the JSON form, on the demo cluster's data, and
    /// the time to decode each (run with `-- --nocapture` to read the figures;
    /// `docs/bucket-format.md` quotes them). An asset file is small whatever its form: its
    /// dozens of rows weigh less than the Parquet footer (the schema and each column's
    /// metadata, a few KB), so only allocation files are held to being smaller.
    #[test]
    fn parquet_allocation_files_are_smaller_than_json_zst_on_demo_data() {
        let time = |f: &dyn Fn()| {
            let n = 20;
            let started = std::time::Instant::now();
            for _ in 0..n {
                f();
            }
            started.elapsed() / n
        };
        for set in demo_sets(300) {
            let rows = match &set {
                EtlSet::Allocations(s) => s.allocations.len(),
                EtlSet::Assets(s) => s.assets.len(),
            };
            let parquet = encode(&set).unwrap();
            let json = zstd::encode_all(serde_json::to_vec(&set).unwrap().as_slice(), 3).unwrap();
            let from_parquet = time(&|| {
                decode(&parquet).unwrap();
            });
            let from_json = time(&|| {
                let j = zstd::decode_all(json.as_slice()).unwrap();
                serde_json::from_slice::<EtlSet>(&j).unwrap();
            });
            let per_row = |b: usize| b as f64 / rows as f64;
            let us_per_row = |d: std::time::Duration| d.as_secs_f64() * 1e6 / rows as f64;
            println!(
                "{} {}: {rows} rows; parquet {} B ({:.1} B/row), decode {:.2} µs/row; json.zst {} B ({:.1} B/row), decode {:.2} µs/row",
                set.kind().as_str(),
                set.resolution(),
                parquet.len(),
                per_row(parquet.len()),
                us_per_row(from_parquet),
                json.len(),
                per_row(json.len()),
                us_per_row(from_json),
            );
            if set.kind() == SetKind::Allocations {
                assert!(
                    parquet.len() < json.len(),
                    "{} >= {}",
                    parquet.len(),
                    json.len()
                );
            }
        }
    }
}
