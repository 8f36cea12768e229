//! moto on loopback behind the proxy the tests use (CREATING, UPDATING and DELETING states, the
//! version updates and access entries moto lacks), for following an AWS cell by hand: prints the
//! URL to give the operator as `AWS_ENDPOINT_URL`, and runs until Ctrl-C.

use cellplane_cloud_testkit::moto::{Behaviour, MotoProxy};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proxy = MotoProxy::start(Behaviour { throttle_first_calls: false, ..Behaviour::default() }).await?;
    println!("AWS_ENDPOINT_URL={}", proxy.url);
    tokio::signal::ctrl_c().await?;
    Ok(())
}
