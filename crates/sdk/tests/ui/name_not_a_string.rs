#[tracelake::trace(name = step_name)]
fn step() {}

fn main() {}
