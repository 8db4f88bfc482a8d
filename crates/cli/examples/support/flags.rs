//! Command-line flags of the load harnesses: `--name value` pairs.

use anyhow::Context;

/// The `(--name, value)` pairs given on the command line, in order.
pub(crate) fn pairs() -> anyhow::Result<Vec<(String, String)>> {
    let mut args = std::env::args().skip(1);
    let mut out = Vec::new();
    while let Some(flag) = args.next() {
        let value = args.next().with_context(|| format!("{flag} needs a value"))?;
        out.push((flag, value));
    }
    Ok(out)
}
