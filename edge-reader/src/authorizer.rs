//! What a query may do, decided by SQLite's authorizer while a statement is
//! prepared: reading tables, calling side-effect-free functions and a short
//! list of read-only PRAGMAs. Everything else — writes, schema changes,
//! ATTACH/DETACH, transactions and savepoints, ANALYZE, REINDEX, PRAGMAs
//! that set or change anything, extension loading — is denied.
//!
//! This works on what SQLite parsed, not on the SQL text, so comments,
//! quoting, CTEs, views and triggers cannot smuggle a write past it. The
//! connection is also opened read-only with `query_only` on and in defensive
//! mode, ATTACH is limited to zero databases, and statements SQLite does not
//! classify as read-only (`sqlite3_stmt_readonly`) are refused after
//! prepare (see `pool.rs`): the authorizer is the first of several walls,
//! not the only one. That last wall is the one that stops `VACUUM` and
//! `VACUUM INTO`: SQLite has no authorizer action for them.

use std::sync::{Arc, Mutex};

use rusqlite::hooks::{AuthAction, AuthContext, Authorization};

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

/// The reason of the last refusal on one connection, so the HTTP error can
/// say what was refused instead of SQLite's bare "not authorized".
#[derive(Clone, Default)]
pub struct Denials(Arc<Mutex<Option<String>>>);

impl Denials {
    /// Takes the reason recorded since the last call, if any.
    pub fn take(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    fn record(&self, reason: String) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason);
    }

    /// Forgets any reason recorded (before a new statement is prepared).
    pub fn clear(&self) {
        self.take();
    }
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
        Ok(()) => Authorization::Allow,
        Err(reason) => {
            denials.record(reason);
            Authorization::Deny
        }
    }
}
