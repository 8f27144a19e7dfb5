//! `smidge-echo`, the program the local cluster runs for the `smidge/echo` image: HTTP on `PORT`
//! (8080) answering `<name> <path> host=<host>` with an `x-backend: <name>` header, and TCP echo on
//! `ECHO_PORT` (7000). The name is `SERVICE_NAME`, else `HOSTNAME` (the pod's name).

#![forbid(unsafe_code)]

use std::process::ExitCode;

fn port(var: &str, default: u16) -> Result<u16, String> {
    match std::env::var(var) {
        Err(_) => Ok(default),
        Ok(text) => text
            .parse()
            .map_err(|_| format!("smidge-echo: {var}={text:?} is not a port number")),
    }
}

fn main() -> ExitCode {
    let ports = port("PORT", 8080).and_then(|h| Ok((h, port("ECHO_PORT", 7000)?)));
    let (http, echo) = match ports {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let name = std::env::var("SERVICE_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "echo".into());
    // Lives as long as the process.
    let name: &'static str = Box::leak(name.into_boxed_str());
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("smidge-echo: {e}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!("smidge-echo {name}: HTTP on :{http}, TCP echo on :{echo}");
    match rt.block_on(smidge_local_cluster::apps::echo_server(name, http, echo)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("smidge-echo: {e:#}");
            ExitCode::FAILURE
        }
    }
}
