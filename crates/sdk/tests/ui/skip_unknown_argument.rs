#[tracelake::trace(skip(password))]
fn login(user: &str) -> bool {
    !user.is_empty()
}

fn main() {}
