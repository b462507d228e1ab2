//! Parsing the kebab-case names that the library's enums serialize to (`cross-entropy`,
//! `sign-consistent`), so that a command line, a config file and the JSON reports all use the
//! same spelling without the library depending on a CLI crate.
use crate::error::{Error, Result};
use serde::de::DeserializeOwned;

/// `s` read as the serde (kebab-case) name of a `T`; the error names `field` and lists `expected`.
pub fn parse_kebab<T: DeserializeOwned>(field: &'static str, s: &str, expected: &str) -> Result<T> {
    serde_json::from_value(serde_json::Value::String(s.to_owned()))
        .map_err(|_| Error::invalid(field, s, format!("one of {expected}")))
}

/// Implements `FromStr` for a serde kebab-case enum, listing the accepted names in the error.
macro_rules! from_kebab_str {
    ($ty:ty, $field:literal, $names:literal) => {
        impl std::str::FromStr for $ty {
            type Err = $crate::error::Error;
            fn from_str(s: &str) -> $crate::error::Result<Self> {
                $crate::names::parse_kebab($field, s, $names)
            }
        }
    };
}
pub(crate) use from_kebab_str;
