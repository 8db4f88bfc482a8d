#[tracelake::trace]
struct Config {
    model: String,
}

fn main() {}
