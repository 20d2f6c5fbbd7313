//! Tenant ids, as carried by the `X-Scope-OrgID` header.

use std::fmt;
use std::sync::Arc;

use crate::error::Error;

/// The header naming the tenant of a request.
pub const TENANT_HEADER: &str = "X-Scope-OrgID";
/// The tenant used when a request names none.
pub const DEFAULT_TENANT: &str = "anonymous";
const MAX_TENANT_LEN: usize = 150;

/// A validated tenant id. The rules are Cortex/Loki's: at most 150 characters of
/// `[A-Za-z0-9!-_.*'()]`, never `.` or `..` — which also makes the id safe to use
/// as a directory name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TenantId(Arc<str>);

impl TenantId {
    pub fn parse(id: &str) -> Result<Self, Error> {
        let reject = |reason| Error::Tenant {
            id: id.to_string(),
            reason,
        };
        if id.is_empty() {
            return Err(reject("it is empty"));
        }
        if id.len() > MAX_TENANT_LEN {
            return Err(reject("it is longer than 150 characters"));
        }
        if id == "." || id == ".." {
            return Err(reject("it must not be '.' or '..'"));
        }
        let allowed = |c: char| c.is_ascii_alphanumeric() || "!-_.*'()".contains(c);
        if !id.chars().all(allowed) {
            return Err(reject("only letters, digits and !-_.*'() are allowed"));
        }
        Ok(TenantId(Arc::from(id)))
    }

    /// The tenant of requests without a tenant header.
    pub fn default_tenant() -> Self {
        TenantId(Arc::from(DEFAULT_TENANT))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_ids() {
        assert!(TenantId::parse("team-a_1").is_ok());
        assert!(TenantId::parse("..").is_err());
        assert!(TenantId::parse("a/b").is_err());
        assert!(TenantId::parse("").is_err());
        assert!(TenantId::parse(&"x".repeat(151)).is_err());
    }
}
