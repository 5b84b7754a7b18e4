//! The bgslot binary: parse, run, map the outcome to an exit code.

fn main() {
    let cli = bgslot::cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let status = runtime.block_on(bgslot::cli::run(cli));
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    std::process::exit(status.code());
}
