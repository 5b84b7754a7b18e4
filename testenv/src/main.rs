//! Local control plane for bgslot tests.
fn main() {}
