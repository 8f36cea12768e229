//! Tenant databases on a cell's PostgreSQL server: one login role per tenant that owns one
//! database and may do nothing else (no SUPERUSER, CREATEDB, CREATEROLE, REPLICATION or
//! BYPASSRLS, member of no role; CONNECT on its database revoked from PUBLIC, so other tenants
//! cannot reach it). It inherits (the default) so that, as the database's owner, it has the
//! rights of pg_database_owner over the public schema on PostgreSQL 15 and later.
//!
//! Names that reach SQL are never taken from the user as they are: the role and database name
//! is derived from the namespace name (a DNS label, checked again here), must match
//! `^[a-z_][a-z0-9_]{0,62}$`, and is still quoted as an identifier. Passwords are random
//! alphanumerics (quoted as a literal, since `CREATE ROLE ... PASSWORD` takes no parameter).

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{AssertSqlSafe, Connection};

use super::CellError;
use crate::api::namespace::TenantId;

/// Prefix of every tenant role and database, so an administrator can tell them apart.
pub const PREFIX: &str = "cp_";

/// How to reach a cell's server: as its administrator, or as a tenant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminLogin {
    pub host: String,
    pub port: u16,
    /// The database the administrator connects to.
    pub database: String,
    pub username: String,
    pub password: String,
}

impl AdminLogin {
    fn options(&self, database: &str) -> PgConnectOptions {
        let mut options = PgConnectOptions::new()
            .host(&self.host)
            .port(self.port)
            .username(&self.username)
            .database(database)
            .application_name("cellplane");
        if !self.password.is_empty() {
            options = options.password(&self.password);
        }
        options
    }

    async fn connect(&self, database: &str) -> Result<PgConnection, CellError> {
        let options = self.options(database);
        match tokio::time::timeout(Duration::from_secs(10), PgConnection::connect_with(&options)).await {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(e)) => Err(classify(&format!("connecting to {}:{}/{database}", self.host, self.port), e)),
            Err(_) => {
                Err(CellError::Transient(format!("connecting to {}:{}/{database} timed out", self.host, self.port)))
            }
        }
    }

    /// `host:port`, for status.
    pub fn server(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// The role and database name for a tenant: `cp_<name>_<account>_<hash>`, unique across
/// accounts within 63 bytes (see [`TenantId::unique_name`]). Both parts must be DNS labels (at
/// most 63 of `a-z`, `0-9`, `-`); anything else is refused rather than mangled.
pub fn tenant_identifier(tenant: &TenantId) -> Result<String, CellError> {
    for (what, part) in [("namespace name", &tenant.name), ("account", &tenant.account)] {
        if !is_dns_label(part) {
            return Err(CellError::Invalid(format!(
                "{what} {part:?} cannot name a database: it must be a DNS label (a-z, 0-9, '-', at most 63)"
            )));
        }
    }
    let ident = tenant.unique_name(PREFIX, '_', 63);
    check_identifier(&ident)?;
    Ok(ident)
}

fn is_dns_label(part: &str) -> bool {
    !part.is_empty()
        && part.len() <= 63
        && part.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !part.starts_with('-')
        && !part.ends_with('-')
}

/// The only identifiers this module sends to the server.
fn check_identifier(ident: &str) -> Result<(), CellError> {
    let ok = !ident.is_empty()
        && ident.len() <= 63
        && ident.bytes().next().is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
        && ident.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok { Ok(()) } else { Err(CellError::Invalid(format!("{ident:?} is not a safe SQL identifier"))) }
}

/// `"ident"`, with embedded quotes doubled (defence in depth: identifiers are checked first).
pub fn quote_ident(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// `'literal'`, with embedded quotes doubled; backslashes are literal with
/// standard_conforming_strings, which is on since PostgreSQL 9.1 (E'' is never used).
pub fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// A random password of 32 alphanumerics.
pub fn new_password() -> String {
    use rand::Rng;
    use rand::distr::Alphanumeric;
    rand::rng().sample_iter(&Alphanumeric).take(32).map(char::from).collect()
}

fn classify(what: &str, e: sqlx::Error) -> CellError {
    let message = format!("{what}: {e}");
    match &e {
        sqlx::Error::Database(db) => match db.code().as_deref() {
            // insufficient_privilege, invalid_authorization_specification, invalid_password
            Some("42501" | "28000" | "28P01") => CellError::Invalid(message),
            _ => CellError::Transient(message),
        },
        _ => CellError::Transient(message),
    }
}

/// Runs statements built from checked identifiers and quoted literals only (the reason the
/// text is asserted safe), over the simple protocol, which CREATE DATABASE needs.
async fn run(conn: &mut PgConnection, sql: String) -> Result<(), sqlx::Error> {
    sqlx::raw_sql(AssertSqlSafe(sql)).execute(conn).await.map(|_| ())
}

/// What a tenant was granted, as recorded in status.
pub const GRANTS: &str = "LOGIN; owns its database; NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS; \
                          member of no role; CONNECT and TEMPORARY on its database revoked from PUBLIC";

/// Creates (or brings back to the intended state) the tenant's role and database.
pub async fn create(admin: &AdminLogin, ident: &str, password: &str) -> Result<(), CellError> {
    check_identifier(ident)?;
    if !password.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(CellError::Invalid("tenant passwords are alphanumeric".into()));
    }
    let (role, pw) = (quote_ident(ident), quote_literal(password));
    let attributes = "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE INHERIT NOREPLICATION NOBYPASSRLS";
    let mut conn = admin.connect(&admin.database).await?;
    let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM pg_roles WHERE rolname = $1")
        .bind(ident)
        .fetch_optional(&mut conn)
        .await
        .map_err(|e| classify("looking up the tenant role", e))?;
    let role_sql = match exists {
        None => format!("CREATE ROLE {role} WITH {attributes} PASSWORD {pw}"),
        Some(_) => format!("ALTER ROLE {role} WITH {attributes} PASSWORD {pw}"),
    };
    match run(&mut conn, role_sql).await {
        Ok(_) => {}
        // Created concurrently by another attempt: make sure it has the intended attributes.
        Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("42710") => {
            let alter = format!("ALTER ROLE {role} WITH {attributes} PASSWORD {pw}");
            run(&mut conn, alter).await.map_err(|e| classify("altering the tenant role", e))?;
        }
        Err(e) => return Err(classify("creating the tenant role", e)),
    }
    // An administrator that is not a superuser (a managed PostgreSQL) can only give a database
    // to, and later drop, a role it is a member of.
    let superuser: bool = sqlx::query_scalar("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
        .fetch_one(&mut conn)
        .await
        .map_err(|e| classify("looking up the administrator", e))?;
    if !superuser {
        run(&mut conn, format!("GRANT {role} TO CURRENT_USER"))
            .await
            .map_err(|e| classify("making the administrator a member of the tenant role", e))?;
    }
    let db_exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = $1")
        .bind(ident)
        .fetch_optional(&mut conn)
        .await
        .map_err(|e| classify("looking up the tenant database", e))?;
    if db_exists.is_none() {
        match run(&mut conn, format!("CREATE DATABASE {role} OWNER {role}")).await {
            Ok(_) => {}
            Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("42P04") => {}
            Err(e) => return Err(classify("creating the tenant database", e)),
        }
    }
    run(&mut conn, format!("ALTER DATABASE {role} OWNER TO {role}"))
        .await
        .map_err(|e| classify("setting the database owner", e))?;
    run(&mut conn, format!("REVOKE ALL ON DATABASE {role} FROM PUBLIC"))
        .await
        .map_err(|e| classify("revoking PUBLIC on the tenant database", e))?;
    conn.close().await.ok();

    // Inside the tenant database: its public schema is the tenant's, and nobody else's. Only a
    // superuser can change that schema (on PostgreSQL 15 and later it belongs to
    // pg_database_owner, that is to the tenant already, and PUBLIC may only use it); for
    // other administrators the CONNECT revoked above is what keeps other tenants out.
    if superuser {
        let mut conn = admin.connect(ident).await?;
        run(&mut conn, format!("ALTER SCHEMA public OWNER TO {role}; REVOKE ALL ON SCHEMA public FROM PUBLIC"))
            .await
            .map_err(|e| classify("securing the public schema", e))?;
        conn.close().await.ok();
    }
    Ok(())
}

/// Drops the tenant's database (disconnecting its sessions) and role. What is already gone
/// is fine.
/// A round trip to a tenant's database as the tenant: connect with its login, `SELECT 1`.
pub async fn round_trip(login: &AdminLogin) -> Result<(), CellError> {
    let mut conn = login.connect(&login.database).await?;
    sqlx::query("SELECT 1").execute(&mut conn).await.map_err(|e| classify("SELECT 1", e))?;
    conn.close().await.map_err(|e| classify("closing", e))
}

pub async fn drop(admin: &AdminLogin, ident: &str) -> Result<(), CellError> {
    check_identifier(ident)?;
    let role = quote_ident(ident);
    let mut conn = admin.connect(&admin.database).await?;
    run(&mut conn, format!("DROP DATABASE IF EXISTS {role} WITH (FORCE)"))
        .await
        .map_err(|e| classify("dropping the tenant database", e))?;
    let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM pg_roles WHERE rolname = $1")
        .bind(ident)
        .fetch_optional(&mut conn)
        .await
        .map_err(|e| classify("looking up the tenant role", e))?;
    if exists.is_some() {
        // Privileges granted to it in the admin database, then the role itself.
        run(&mut conn, format!("DROP OWNED BY {role}")).await.map_err(|e| classify("dropping owned", e))?;
        run(&mut conn, format!("DROP ROLE IF EXISTS {role}"))
            .await
            .map_err(|e| classify("dropping the tenant role", e))?;
    }
    conn.close().await.ok();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_derived_from_dns_labels_only() {
        let ident = |name: &str, account: &str| tenant_identifier(&TenantId::new(name, account));
        let readable = ident("web", "acme-prod").unwrap();
        assert!(readable.starts_with("cp_web_acme_prod_"), "{readable}");
        // The readable part is the same; the identity differs.
        assert_ne!(ident("a-b", "c").unwrap(), ident("a", "b-c").unwrap());
        let long = ident(&"a".repeat(63), &"b".repeat(63)).unwrap();
        assert_eq!(long.len(), 63);
        assert_ne!(long, ident(&"a".repeat(63), &format!("{}c", "b".repeat(62))).unwrap());
        for hostile in
            ["a\"; DROP ROLE postgres; --", "x'y", "Ünïcödé", "tenant\u{200b}", &"a".repeat(64), "", "-a", "a.b", "a b"]
        {
            assert!(matches!(ident(hostile, "acme"), Err(CellError::Invalid(_))), "{hostile:?} was accepted");
            assert!(matches!(ident("web", hostile), Err(CellError::Invalid(_))), "account {hostile:?} was accepted");
        }
    }

    #[test]
    fn quoting_doubles_quotes() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert!(check_identifier("a\"b").is_err());
        assert!(new_password().bytes().all(|b| b.is_ascii_alphanumeric()));
    }
}
