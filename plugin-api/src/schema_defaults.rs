//! The `default` values of a plugin's config schema, applied to its config.
//!
//! The host and [`TestHost`](crate::testing::TestHost) make a plugin's
//! config the same way: the plugin's default config, the operator's section
//! merged over it key by key, then, for every key still missing, the
//! `default` its schema gives; only then is the config validated against
//! the schema. So a schema's `default` counts as a default config would.

use serde_json::{Map, Value};

/// Fills in, for each property of `schema` (an object schema's
/// `properties`) that `config` lacks, the property's `default`; and for a
/// property that `config` holds as an object, the defaults of that
/// property's own `properties`, at any depth. A value present is never
/// replaced, and nothing else of the schema is read: no `$ref`, `allOf`,
/// `anyOf`, `oneOf`, `if`/`then` or `additionalProperties` is followed.
///
/// ```
/// use agent_host_plugin_sdk::{json, schema_defaults::fill_defaults};
///
/// let schema = json!({
///     "type": "object",
///     "properties": {
///         "units": {"enum": ["metric", "imperial"], "default": "metric"},
///         "retries": {"type": "integer", "default": 3},
///         "cache": {
///             "type": "object",
///             "properties": {"minutes": {"type": "integer", "default": 10}}
///         }
///     }
/// });
/// let mut config = json!({"retries": 5, "cache": {}});
/// fill_defaults(&schema, config.as_object_mut().unwrap());
/// assert_eq!(config, json!({"units": "metric", "retries": 5, "cache": {"minutes": 10}}));
/// ```
pub fn fill_defaults(schema: &Value, config: &mut Map<String, Value>) {
    let Some(properties) = schema.get("properties").and_then(Value::as_object) else {
        return;
    };
    for (key, property) in properties {
        match config.get_mut(key) {
            Some(Value::Object(inner)) => fill_defaults(property, inner),
            Some(_) => {}
            None => {
                if let Some(default) = property.get("default") {
                    let mut value = default.clone();
                    if let Value::Object(inner) = &mut value {
                        fill_defaults(property, inner);
                    }
                    config.insert(key.clone(), value);
                }
            }
        }
    }
}
