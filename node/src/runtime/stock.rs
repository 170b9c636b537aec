//! The plugins the node ships, built from `plugins/` by `build.rs` and
//! embedded in the binary. A pipeline names them `stock:NAME`.

include!(concat!(env!("OUT_DIR"), "/stock.rs"));

/// The bytes of stock plugin `name`.
pub fn bytes(name: &str) -> Option<&'static [u8]> {
    STOCK.iter().find(|(n, _, _)| *n == name).map(|(_, _, bytes)| *bytes)
}

/// Where the build left stock plugin `name` as a file (for tests and
/// tutorials that load plugins by path).
pub fn path(name: &str) -> Option<&'static str> {
    STOCK.iter().find(|(n, _, _)| *n == name).map(|(_, path, _)| *path)
}

/// The names of all stock plugins.
pub fn names() -> impl Iterator<Item = &'static str> {
    STOCK.iter().map(|(name, _, _)| *name)
}
