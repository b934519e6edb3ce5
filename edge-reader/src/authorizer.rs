//! What a query may do — the same for `edge-reader serve`'s HTTP queries
//! and the local `edge-reader query` — decided by SQLite's authorizer while
//! a statement is prepared: reading tables, calling side-effect-free functions and a short
//! list of read-only PRAGMAs. Everything else — writes, schema changes,
//! ATTACH/DETACH, transactions and savepoints, ANALYZE, REINDEX, PRAGMAs
//! that set or change anything, extension loading — is denied.
//!
//! This works on what SQLite parsed, not on the SQL text, so comments,
//! quoting, CTEs, views and triggers cannot smuggle a write past it. The
//! connection is also opened read-only with `query_only` on and in defensive
//! mode, ATTACH is limited to zero databases, and statements SQLite does not
//! classify as read-only (`sqlite3_stmt_readonly`) are refused after
//! prepare ([`check_statement`]): the authorizer is the first of several
//! walls, not the only one. That last wall is the one that stops `VACUUM`
//! and `VACUUM INTO`: SQLite has no authorizer action for them. It has one
//! exception: SQLite classifies every `PRAGMA journal_mode` as writing
//! (it could switch the mode), and the authorizer lets through only the
//! form without an argument, which just reports the mode.
//!
//! [`harden`] puts every wall up on a connection; [`check_sql`] refuses
//! text SQLite would silently cut short (a NUL byte ends SQLite's reading
//! of the text, so what follows it would be dropped without a word).

use std::sync::{Arc, Mutex};

use rusqlite::hooks::{AuthAction, AuthContext, Authorization};
use rusqlite::{Connection, Statement};

/// PRAGMAs that only report, and may name a table or index as argument
/// (`PRAGMA table_info(t)`, `SELECT * FROM pragma_index_list('t')`).
const READ_PRAGMAS_WITH_ARGUMENT: &[&str] =
    &["foreign_key_list", "index_info", "index_list", "index_xinfo", "table_info", "table_list", "table_xinfo"];

/// PRAGMAs that report a setting or a fact: allowed only without an
/// argument, since `PRAGMA user_version = 7` or `PRAGMA journal_mode(delete)`
/// would change it.
const READ_PRAGMAS_WITHOUT_ARGUMENT: &[&str] = &[
    "application_id",
    "collation_list",
    "compile_options",
    "data_version",
    "database_list",
    "encoding",
    "freelist_count",
    "function_list",
    "journal_mode",
    "module_list",
    "page_count",
    "page_size",
    "pragma_list",
    "schema_version",
    "user_version",
];

/// Functions refused even though SQLite calls them from a SELECT: they load
/// code or reach outside the database.
const DENIED_FUNCTIONS: &[&str] = &[
    // Loads a shared library into the process.
    "load_extension",
    // The two-argument form registers a tokenizer from a raw pointer.
    "fts3_tokenizer",
    // Present only in some builds (the shell's extensions); files and editors.
    "readfile",
    "writefile",
    "edit",
];

/// What the authorizer saw on one connection: the reason of the last
/// refusal, so the error can say what was refused instead of SQLite's bare
/// "not authorized", and whether it allowed a `PRAGMA journal_mode` read.
#[derive(Clone, Default)]
pub struct Denials(Arc<Mutex<Seen>>);

#[derive(Default)]
struct Seen {
    reason: Option<String>,
    journal_mode_read: bool,
}

impl Denials {
    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        // Plain values: a panic elsewhere cannot leave them torn.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes the reason recorded since the last call, if any.
    pub fn take(&self) -> Option<String> {
        self.seen().reason.take()
    }

    fn record(&self, reason: String) {
        self.seen().reason = Some(reason);
    }

    /// Forgets what was recorded (before a new statement is prepared).
    pub fn clear(&self) {
        *self.seen() = Seen::default();
    }
}

/// Refuses SQL text that SQLite would not read whole: a NUL byte ends
/// SQLite's reading of the text, so whatever follows it would be dropped
/// silently (`SELECT 1\0; DELETE ...` runs `SELECT 1`, and a query cut
/// short returns the wrong rows without an error).
pub fn check_sql(sql: &str) -> Result<(), String> {
    match sql.find('\0') {
        Some(offset) => Err(format!(
            "the SQL holds a NUL byte at offset {offset}: SQLite would ignore everything after it; remove it (pass values as parameters)"
        )),
        None => Ok(()),
    }
}

/// Puts every wall of this module up on a read connection: `query_only`,
/// defensive mode, no database can be attached, and the authorizer (last:
/// it would refuse the PRAGMA before it). Returns what the authorizer
/// records. The caller opened `conn` read-only.
pub fn harden(conn: &mut Connection) -> rusqlite::Result<Denials> {
    conn.pragma_update(None, "query_only", true)?;
    // Defensive mode: no writable_schema, no shadow-table writes, no
    // journal_mode=OFF, even if something got past the rest.
    conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_DEFENSIVE, true)?;
    // No database can be attached, whatever the SQL.
    conn.set_limit(rusqlite::limits::Limit::SQLITE_LIMIT_ATTACHED, 0)?;
    let denials = Denials::default();
    conn.authorizer(Some(authorizer(denials.clone())))?;
    Ok(denials)
}

/// The last wall, after a statement passed the authorizer: refuses one that
/// SQLite classifies as writing (`sqlite3_stmt_readonly`), except a
/// `PRAGMA journal_mode` read. `statement` may come from a statement cache,
/// whose hits the authorizer never sees: such a statement is prepared once
/// more, uncached, to learn what it does (only statements SQLite calls
/// writing pay this, and they are refused or rare).
pub fn check_statement(
    conn: &Connection,
    sql: &str,
    statement: &Statement<'_>,
    denials: &Denials,
) -> Result<(), String> {
    if statement.readonly() {
        return Ok(());
    }
    denials.clear();
    let reads_journal_mode = conn.prepare(sql).is_ok() && denials.seen().journal_mode_read;
    if reads_journal_mode { Ok(()) } else { Err("the statement would write (the replica is read-only)".into()) }
}

/// Decides one action; `Err(reason)` to deny.
pub fn check(context: &AuthContext<'_>) -> Result<(), String> {
    let action = context.action;
    match action {
        AuthAction::Select | AuthAction::Read { .. } | AuthAction::Recursive => Ok(()),
        AuthAction::Function { function_name } => {
            if DENIED_FUNCTIONS.iter().any(|f| f.eq_ignore_ascii_case(function_name)) {
                Err(format!("function {function_name}() is not allowed"))
            } else {
                Ok(())
            }
        }
        AuthAction::Pragma { pragma_name, pragma_value } => {
            let name = pragma_name.to_ascii_lowercase();
            if READ_PRAGMAS_WITH_ARGUMENT.contains(&name.as_str())
                || (pragma_value.is_none() && READ_PRAGMAS_WITHOUT_ARGUMENT.contains(&name.as_str()))
            {
                Ok(())
            } else if let Some(value) = pragma_value {
                Err(format!("PRAGMA {pragma_name} with argument {value:?} is not allowed (read-only PRAGMAs only)"))
            } else {
                Err(format!("PRAGMA {pragma_name} is not allowed (read-only PRAGMAs only)"))
            }
        }
        AuthAction::Attach { filename } => Err(format!("ATTACH {filename:?} is not allowed")),
        AuthAction::Detach { .. } => Err("DETACH is not allowed".into()),
        // CREATE and DROP write the schema table first, so name what they are.
        AuthAction::Insert { table_name }
        | AuthAction::Delete { table_name }
        | AuthAction::Update { table_name, .. }
            if is_schema_table(table_name) =>
        {
            Err("CREATE, DROP and other schema changes are not allowed".into())
        }
        AuthAction::Insert { table_name } => Err(format!("INSERT into {table_name} is not allowed")),
        AuthAction::Update { table_name, .. } => Err(format!("UPDATE of {table_name} is not allowed")),
        AuthAction::Delete { table_name } => Err(format!("DELETE from {table_name} is not allowed")),
        AuthAction::Transaction { .. } | AuthAction::Savepoint { .. } => {
            Err("transactions and savepoints are not allowed (each query is its own read transaction)".into())
        }
        AuthAction::CreateIndex { .. }
        | AuthAction::CreateTable { .. }
        | AuthAction::CreateTempIndex { .. }
        | AuthAction::CreateTempTable { .. }
        | AuthAction::CreateTempTrigger { .. }
        | AuthAction::CreateTempView { .. }
        | AuthAction::CreateTrigger { .. }
        | AuthAction::CreateView { .. }
        | AuthAction::CreateVtable { .. } => Err("CREATE is not allowed".into()),
        AuthAction::DropIndex { .. }
        | AuthAction::DropTable { .. }
        | AuthAction::DropTempIndex { .. }
        | AuthAction::DropTempTable { .. }
        | AuthAction::DropTempTrigger { .. }
        | AuthAction::DropTempView { .. }
        | AuthAction::DropTrigger { .. }
        | AuthAction::DropView { .. }
        | AuthAction::DropVtable { .. } => Err("DROP is not allowed".into()),
        AuthAction::AlterTable { .. } => Err("ALTER TABLE is not allowed".into()),
        AuthAction::Reindex { .. } => Err("REINDEX is not allowed".into()),
        AuthAction::Analyze { .. } => Err("ANALYZE is not allowed".into()),
        // Deny by default: an action this build does not know is not safe.
        other => Err(format!("{other:?} is not allowed")),
    }
}

fn is_schema_table(name: &str) -> bool {
    ["sqlite_master", "sqlite_schema", "sqlite_temp_master", "sqlite_temp_schema"]
        .iter()
        .any(|schema| schema.eq_ignore_ascii_case(name))
}

/// The authorizer callback of a read connection: [`check`], recording the
/// reason of a refusal in `denials`.
pub fn authorizer(denials: Denials) -> impl for<'r> FnMut(AuthContext<'r>) -> Authorization + Send + 'static {
    move |context| match check(&context) {
        Ok(()) => {
            if let AuthAction::Pragma { pragma_name, pragma_value: None } = context.action
                && pragma_name.eq_ignore_ascii_case("journal_mode")
            {
                denials.seen().journal_mode_read = true;
            }
            Authorization::Allow
        }
        Err(reason) => {
            denials.record(reason);
            Authorization::Deny
        }
    }
}
