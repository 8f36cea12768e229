//! Without the `cel` feature, memapi evaluates no CEL rules: no schema has any.

use serde_json::Value;

use crate::error::Cause;

#[derive(Debug, PartialEq, Eq)]
pub enum Rules {}

impl Rules {
    pub fn of_schema(_schema: &Value, _at: &str) -> Result<Option<Self>, Vec<Cause>> {
        Ok(None)
    }

    pub fn check(&self, _obj: &Value, _old: Option<&Value>) -> Result<Vec<Cause>, std::convert::Infallible> {
        match *self {}
    }
}
