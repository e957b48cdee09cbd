//! Running the `mq` binary against a [`TestBroker`](super::TestBroker).

use std::process::{Output, Stdio};

use serde_json::Value;
use tokio::io::AsyncWriteExt;

use super::TestBroker;

/// `mq --broker <b> ARGS` with `stdin` as its input; waits for it to exit.
pub async fn mq(b: &TestBroker, args: &[&str], stdin: &str) -> Output {
    mq_bytes(b, args, stdin.as_bytes()).await
}

/// [`mq`] with arbitrary bytes on stdin.
pub async fn mq_bytes(b: &TestBroker, args: &[&str], stdin: &[u8]) -> Output {
    let mut child = spawn_mq(b, args);
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin).await.unwrap();
    drop(input);
    child.wait_with_output().await.unwrap()
}

/// `mq --broker <b> ARGS` left running, with every stream piped.
pub fn spawn_mq(b: &TestBroker, args: &[&str]) -> tokio::process::Child {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_mq"))
        .arg("--broker")
        .arg(&b.addr)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

/// Every line of stdout, parsed as JSON.
pub fn json_lines(out: &Output) -> Vec<Value> {
    String::from_utf8(out.stdout.clone())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}
