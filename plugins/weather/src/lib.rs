//! stub
pub fn plugin() -> plugin_api::Plugin {
    plugin_api::Plugin::new("x", "1.0.0")
}
