//! `smidge-sample-app`: the SMI conformance sample app (REFERENCE.md §8.2). Serves on `PORT`
//! (9091) as `SERVICE_NAME`. `smidge-sample-app fetch METHOD URL [BODY]` makes one request and
//! prints the status and body (the conformance harness uses it from inside the cluster).

#![forbid(unsafe_code)]

use std::process::ExitCode;

use smidge_conformance::sample_app::{fetch, listen, App, DEFAULT_PORT};

fn main() -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("smidge-sample-app: {e}");
            return ExitCode::FAILURE;
        }
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("fetch") {
        let (Some(method), Some(url)) = (args.get(1), args.get(2)) else {
            eprintln!("usage: smidge-sample-app fetch METHOD URL [BODY]");
            return ExitCode::from(2);
        };
        let body = args.get(3).cloned().unwrap_or_default();
        return match rt.block_on(fetch(method, url, &body)) {
            Ok((status, body)) => {
                println!("{status}");
                print!("{body}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("smidge-sample-app fetch: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let port = match std::env::var("PORT") {
        Err(_) => DEFAULT_PORT,
        Ok(p) => match p.parse() {
            Ok(p) => p,
            Err(_) => {
                eprintln!("smidge-sample-app: PORT={p:?} is not a port number");
                return ExitCode::from(2);
            }
        },
    };
    let name = std::env::var("SERVICE_NAME").unwrap_or_default();
    let result = rt.block_on(async {
        let listener = listen(port).await?;
        eprintln!("smidge-sample-app {name}: listening on :{port}");
        App::new(name).serve(listener).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("smidge-sample-app: {e}");
            ExitCode::FAILURE
        }
    }
}
