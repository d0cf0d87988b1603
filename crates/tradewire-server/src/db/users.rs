//! User accounts, for the `tradewire user` command: add (with a portfolio and a risk row,
//! as the demo seed does), list, set a password, remove.

use super::sql::Sql;
use super::{Catalog, Result, seed};
use crate::credentials::hash_password;
use crate::sql_params as params;

/// The shortest password `tradewire user` accepts.
pub const MIN_PASSWORD_CHARS: usize = 8;

/// Why an account change was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserError {
    #[error("a user name has 1 to 64 characters: letters, digits, '.', '_' or '-'")]
    BadName,
    #[error("a password has at least {MIN_PASSWORD_CHARS} characters")]
    ShortPassword,
    #[error("user {0:?} exists already")]
    Exists(String),
    #[error("no user {0:?}")]
    NotFound(String),
}

pub fn check_name(name: &str) -> Result<(), UserError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    ok.then_some(()).ok_or(UserError::BadName)
}

pub fn check_password(password: &str) -> Result<(), UserError> {
    (password.chars().count() >= MIN_PASSWORD_CHARS).then_some(()).ok_or(UserError::ShortPassword)
}

fn id_of(conn: &mut dyn Sql, name: &str) -> Result<Option<String>> {
    conn.text("SELECT id FROM users WHERE username = ?1", params![name])
}

/// Add a user with a portfolio (`balance`) and a risk row; the new user's id.
pub fn add(
    conn: &mut dyn Sql,
    name: &str,
    password: &str,
    balance: &str,
) -> Result<Result<String, UserError>> {
    if let Err(e) = check_name(name).and_then(|()| check_password(password)) {
        return Ok(Err(e));
    }
    if id_of(conn, name)?.is_some() {
        return Ok(Err(UserError::Exists(name.to_owned())));
    }
    seed::create_user(conn, name, password, balance).map(Ok)
}

/// Every user: `(id, name)`, by name.
pub fn list(conn: &mut dyn Sql) -> Result<Vec<(String, String)>> {
    Ok(conn
        .query("SELECT id, username FROM users ORDER BY username", &[])?
        .into_iter()
        .map(|r| {
            let mut r = r.into_iter().map(|c| c.into_text().unwrap_or_default());
            (r.next().unwrap_or_default(), r.next().unwrap_or_default())
        })
        .collect())
}

pub fn set_password(conn: &mut dyn Sql, name: &str, password: &str) -> Result<Result<(), UserError>> {
    if let Err(e) = check_password(password) {
        return Ok(Err(e));
    }
    let n = conn.execute(
        "UPDATE users SET password_hash = ?1 WHERE username = ?2",
        params![hash_password(password), name],
    )?;
    Ok(if n == 1 { Ok(()) } else { Err(UserError::NotFound(name.to_owned())) })
}

/// Remove a user and every row they own in the captured tables (each removal reaches
/// their open streams as a delete). Tokens already issued stay valid until they expire.
pub fn remove(conn: &mut dyn Sql, catalog: &Catalog, name: &str) -> Result<Result<(), UserError>> {
    let Some(id) = id_of(conn, name)? else { return Ok(Err(UserError::NotFound(name.to_owned()))) };
    // Portfolios last: other rows refer to them.
    let mut tables: Vec<_> = catalog.tables().collect();
    tables.sort_by_key(|t| t.spec.table == "portfolios");
    for table in tables {
        conn.execute(
            &format!("DELETE FROM \"{}\" WHERE \"{}\" = ?1", table.spec.table, table.spec.owner),
            params![&id],
        )?;
    }
    conn.execute("DELETE FROM users WHERE id = ?1", params![&id])?;
    Ok(Ok(()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_passwords_are_checked() {
        assert!(check_name("carol.smith-2").is_ok());
        for bad in ["", "a b", "x".repeat(65).as_str(), "évé", "a;drop"] {
            assert_eq!(check_name(bad), Err(UserError::BadName), "{bad:?}");
        }
        assert_eq!(check_password("short"), Err(UserError::ShortPassword));
        assert!(check_password("long enough").is_ok());
    }
}
