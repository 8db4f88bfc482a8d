#[tracelake::trace(level = "debug")]
fn step() {}

fn main() {}
