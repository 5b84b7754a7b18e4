//! bgslot: blue/green releases with Helm.
fn main() {}
