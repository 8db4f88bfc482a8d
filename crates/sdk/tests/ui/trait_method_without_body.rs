trait Tool {
    #[tracelake::trace]
    fn call(&self, input: &str) -> String;
}

fn main() {}
