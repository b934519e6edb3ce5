//! SQLite (compiled to wasm by sqlite-wasm-rs) on a replica's connection,
//! query-only, and its rows as JavaScript values.

use js_sys::{Array, Object, Reflect, Uint8Array};
use rusqlite::Connection;
use rusqlite::types::{Value, ValueRef};
use wasm_bindgen::{JsCast, JsValue};

/// Integers beyond this magnitude lose precision as a JavaScript number
/// and are returned as a BigInt (`Number.MAX_SAFE_INTEGER`).
const MAX_SAFE_INTEGER: i64 = (1 << 53) - 1;

/// A read-only connection.
pub struct ReadOnlyDb {
    conn: Connection,
}

impl ReadOnlyDb {
    /// A connection on the replica's VFS (`lazy`), made query-only.
    pub fn from_connection(conn: Connection) -> ReadOnlyDb {
        // Belt and braces: the VFS refuses writes too.
        let _ = conn.execute_batch("PRAGMA query_only = 1");
        ReadOnlyDb { conn }
    }

    /// Runs one read-only statement with positional `params` and returns
    /// `{ columns: string[], rows: object[] }`, each row an object keyed by
    /// column name.
    pub fn query(&self, sql: &str, params: &Array) -> Result<JsValue, String> {
        let mut statement = self.conn.prepare(sql).map_err(|e| format!("query: {e}"))?;
        if !statement.readonly() {
            return Err(
                "query: the replica is read-only (write on the primary; it reaches replicas on their next sync)".into(),
            );
        }
        let values = params.iter().enumerate().map(|(i, v)| to_sql(i + 1, v)).collect::<Result<Vec<_>, _>>()?;
        let names: Vec<String> = statement.column_names().map(String::from).collect();
        let columns: Array = names.iter().map(|n| JsValue::from_str(n)).collect();
        let keys: Vec<JsValue> = names.iter().map(|n| JsValue::from_str(n)).collect();
        let rows = Array::new();
        let mut cursor =
            statement.query(rusqlite::params_from_iter(values.iter())).map_err(|e| format!("query: {e}"))?;
        while let Some(row) = cursor.next().map_err(|e| format!("query: {e}"))? {
            let object = Object::new();
            for (i, key) in keys.iter().enumerate() {
                let value = row.get_ref(i).map_err(|e| format!("query: {e}"))?;
                // Setting a property on a fresh plain object cannot fail.
                let _ = Reflect::set(&object, key, &to_js(value));
            }
            rows.push(&object);
        }
        let result = Object::new();
        let _ = Reflect::set(&result, &"columns".into(), &columns);
        let _ = Reflect::set(&result, &"rows".into(), &rows);
        Ok(result.into())
    }
}

/// A JavaScript parameter as a SQLite value.
fn to_sql(index: usize, value: JsValue) -> Result<Value, String> {
    if value.is_null() || value.is_undefined() {
        return Ok(Value::Null);
    }
    if let Some(flag) = value.as_bool() {
        return Ok(Value::Integer(i64::from(flag)));
    }
    if let Some(number) = value.as_f64() {
        let integral = number.fract() == 0.0 && number.abs() <= MAX_SAFE_INTEGER as f64;
        return Ok(if integral { Value::Integer(number as i64) } else { Value::Real(number) });
    }
    if value.is_bigint() {
        return i64::try_from(value)
            .map(Value::Integer)
            .map_err(|_| format!("query: parameter {index}: the BigInt does not fit SQLite's 64-bit integers"));
    }
    if let Some(text) = value.as_string() {
        return Ok(Value::Text(text));
    }
    if let Some(bytes) = value.dyn_ref::<Uint8Array>() {
        return Ok(Value::Blob(bytes.to_vec()));
    }
    Err(format!(
        "query: parameter {index}: unsupported type (use null, a boolean, a number, a bigint, a string or a Uint8Array)"
    ))
}

/// A SQLite value as JavaScript: NULL → null, INTEGER → number (BigInt past
/// 2^53), REAL → number, TEXT → string, BLOB → Uint8Array.
fn to_js(value: ValueRef<'_>) -> JsValue {
    match value {
        ValueRef::Null => JsValue::NULL,
        ValueRef::Integer(i) if (-MAX_SAFE_INTEGER..=MAX_SAFE_INTEGER).contains(&i) => JsValue::from_f64(i as f64),
        ValueRef::Integer(i) => js_sys::BigInt::from(i).into(),
        ValueRef::Real(f) => JsValue::from_f64(f),
        ValueRef::Text(text) => JsValue::from_str(&String::from_utf8_lossy(text)),
        ValueRef::Blob(bytes) => Uint8Array::from(bytes).into(),
    }
}
