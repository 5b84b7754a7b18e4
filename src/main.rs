//! The bgslot binary: parse, run, map the outcome to an exit code.

use clap::Parser;

fn main() {
    let cli = bgslot::cli::Cli::parse();
    let json_output = cli.global.output == bgslot::cli::OutputFormat::Json;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let code = match runtime.block_on(bgslot::run(cli)) {
        Ok(()) => bgslot::error::exit::OK,
        Err(err) => {
            let rendered = bgslot::render_error(&err, json_output);
            if json_output {
                println!("{rendered}");
            } else {
                eprint!("{rendered}");
            }
            bgslot::error::exit_code(&err)
        }
    };
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    std::process::exit(code);
}
