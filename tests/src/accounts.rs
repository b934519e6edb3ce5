//! The workload of the reading and verifying tests: accounts whose
//! balances move in every transaction while their total stays constant (a
//! reader can check that it sees a committed state), and a log that grows
//! the file.

/// Accounts in the table.
pub const ACCOUNTS: usize = 40;
/// The sum of every balance, after any number of transfers.
pub const TOTAL: i64 = 40 * 1000;

/// The schema and the accounts, each with a balance of 1000.
pub fn accounts_setup() -> String {
    format!(
        "CREATE TABLE accounts (id INTEGER PRIMARY KEY, balance INTEGER NOT NULL, note TEXT NOT NULL);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {ACCOUNTS})
         INSERT INTO accounts SELECT i, 1000, printf('%.600c', 'x') FROM n;
         CREATE TABLE log (id INTEGER PRIMARY KEY, body TEXT NOT NULL);"
    )
}

/// A transaction that moves money between accounts (the total stays
/// constant) and appends to a log (the file grows).
pub fn transfer(step: u64) -> String {
    let mut sql = String::new();
    for k in 0..5u64 {
        let from = (step * 7 + k * 13) % ACCOUNTS as u64 + 1;
        let to = (step * 11 + k * 5 + 1) % ACCOUNTS as u64 + 1;
        let amount = (step * 31 + k) % 50 + 1;
        sql += &format!(
            "UPDATE accounts SET balance = balance - {amount}, note = printf('%.600c', char(65 + {step} % 26)) WHERE id = {from};
             UPDATE accounts SET balance = balance + {amount} WHERE id = {to};"
        );
    }
    sql += &format!("INSERT INTO log (body) VALUES (printf('%.{}c', 'y'));", 200 + step % 900);
    sql
}
