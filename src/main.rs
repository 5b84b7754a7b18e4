//! The bgslot binary: parse, run, map the outcome to an exit code.

fn main() {
    let cli = bgslot::cli::parse();
    let format = cli.global.output;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let status = match runtime.block_on(bgslot::run(cli)) {
        Ok(()) => bgslot::error::ExitStatus::Done,
        Err(err) => {
            let report = bgslot::output::ErrorReport::new(&err);
            bgslot::output::print_error(&report, format);
            bgslot::error::ExitStatus::of(&err)
        }
    };
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    std::process::exit(status.code());
}
