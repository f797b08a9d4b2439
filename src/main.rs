//! The `hepflow` command line: a thin shell over the library.

mod cli;

fn main() {
    if let Err(e) = cli::run() {
        eprintln!("error: {e:#}");
        // 130 = 128 + SIGINT, as shells report an interrupted command.
        std::process::exit(if hepflow::interrupt::stop_requested() {
            130
        } else {
            1
        });
    }
}
