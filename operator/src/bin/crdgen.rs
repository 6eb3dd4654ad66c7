//! Prints the Rill CRDs as multi-document YAML, or writes one file per CRD with `--out DIR`.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;

#[derive(Parser)]
#[command(about = "Print or write the Rill CustomResourceDefinitions")]
struct Args {
    /// Write `<crd name>.yaml` files into this directory instead of printing.
    #[arg(long)]
    out: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let files = rill_operator::crd::files()?;
    match args.out {
        Some(dir) => {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            for (name, yaml) in files {
                let path = dir.join(name);
                std::fs::write(&path, yaml)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
        }
        None => {
            for (_, yaml) in files {
                print!("---\n{yaml}");
            }
        }
    }
    Ok(())
}
