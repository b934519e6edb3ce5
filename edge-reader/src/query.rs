//! `edge-reader query --db PATH "SQL"`: read-only SQL on the replica.
//!
//! The file is opened read-only behind the same walls as `serve`'s queries
//! ([`crate::authorizer`]): `query_only`, defensive mode, no ATTACH, and
//! SQLite's authorizer (no writes, no PRAGMA that sets anything, no
//! extension loading).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};

use crate::authorizer;

/// Arguments of `edge-reader query`.
#[derive(clap::Args)]
pub struct Args {
    /// The replica's SQLite file.
    #[arg(long, env = "EDGE_READER_DB")]
    db: PathBuf,
    /// The SQL statement.
    sql: String,
    /// Print rows as JSON (one array of objects).
    #[arg(long)]
    json: bool,
    /// Stop after this many rows.
    #[arg(long, default_value_t = 10_000)]
    max_rows: usize,
    /// Abort the query after this many seconds.
    #[arg(long, default_value_t = 30)]
    timeout: u64,
}

/// Runs the query and prints the rows.
pub fn run(args: Args) -> Result<()> {
    if !args.db.exists() {
        bail!("open {}: no such file (run `edge-reader sync` first)", args.db.display());
    }
    let mut conn =
        Connection::open_with_flags(&args.db, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
            .with_context(|| format!("open {}", args.db.display()))?;
    conn.busy_timeout(Duration::from_secs(5)).context("set busy timeout")?;
    let denials = authorizer::harden(&mut conn).with_context(|| format!("open {} read-only", args.db.display()))?;
    if let Err(reason) = authorizer::check_sql(&args.sql) {
        bail!("refuse {:?}: {reason}", args.sql);
    }
    // Bounds the time a query can take: a timer thread interrupts it.
    let interrupt = conn.get_interrupt_handle();
    let timeout = Duration::from_secs(args.timeout);
    std::thread::spawn(move || {
        std::thread::sleep(timeout);
        interrupt.interrupt();
    });
    denials.clear();
    let mut statement = match conn.prepare(&args.sql) {
        Ok(statement) => statement,
        Err(e) => match denials.take() {
            Some(reason) => bail!("refuse {:?}: {reason}", args.sql),
            None => return Err(anyhow::Error::new(e).context(format!("prepare {:?}", args.sql))),
        },
    };
    if let Err(reason) = authorizer::check_statement(&conn, &args.sql, &statement, &denials) {
        bail!("refuse {:?}: {reason}", args.sql);
    }
    let columns: Vec<String> = statement.column_names().map(|c| c.to_string()).collect();
    let mut rows = statement.query([]).context("run the query")?;
    let mut out: Vec<Vec<serde_json::Value>> = Vec::new();
    while let Some(row) = rows.next().context("read a row")? {
        if out.len() == args.max_rows {
            eprintln!("edge-reader: stopped after {} rows (--max-rows)", args.max_rows);
            break;
        }
        let mut values = Vec::with_capacity(columns.len());
        for i in 0..columns.len() {
            values.push(match row.get_ref(i)? {
                ValueRef::Null => serde_json::Value::Null,
                ValueRef::Integer(n) => n.into(),
                ValueRef::Real(x) => x.into(),
                ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned().into(),
                ValueRef::Blob(b) => b.iter().map(|byte| format!("{byte:02x}")).collect::<String>().into(),
            });
        }
        out.push(values);
    }
    if args.json {
        let objects: Vec<serde_json::Value> = out
            .into_iter()
            .map(|values| serde_json::Value::Object(columns.iter().cloned().zip(values).collect()))
            .collect();
        println!("{}", serde_json::Value::Array(objects));
        return Ok(());
    }
    let text = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "NULL".to_string(),
        other => other.to_string(),
    };
    let mut widths: Vec<usize> = columns.iter().map(|c| c.chars().count()).collect();
    for values in &out {
        for (w, v) in widths.iter_mut().zip(values) {
            *w = (*w).max(text(v).chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect::<Vec<_>>().join("  ").trim_end().to_string()
    };
    println!("{}", line(columns.clone()));
    println!("{}", line(widths.iter().map(|w| "-".repeat(*w)).collect()));
    for values in &out {
        println!("{}", line(values.iter().map(text).collect()));
    }
    Ok(())
}
