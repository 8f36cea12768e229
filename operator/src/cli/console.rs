//! `cellplane console`: the web console alone, in a process of its own (beside an operator
//! that runs elsewhere). Users sign in with their own tokens; the journal is read directly.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;
use tokio_util::sync::CancellationToken;

use super::JournalArgs;
use crate::console::{Access, ConsoleArgs};

#[derive(Args, Debug)]
pub struct ConsoleCommand {
    /// The API server to send users' tokens to (its URL and CA only); unset: in-cluster
    /// configuration, then ~/.kube/config.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    #[command(flatten)]
    pub journal: JournalArgs,
    /// Where to serve the console.
    #[arg(long, default_value = "127.0.0.1:8090")]
    pub addr: SocketAddr,
    /// The console's certificate chain, PEM (with --tls-key); off loopback without one, a
    /// self-signed certificate is served and flagged on every page.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The certificate's private key, PEM.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

pub async fn run(command: ConsoleCommand) -> Result<(), String> {
    let (base, _) = crate::client::config(command.kubeconfig.as_deref()).await.map_err(|e| e.to_string())?;
    // A console without a journal still shows the objects; its workflow pages say what is missing.
    let journal = match super::open_journal(&command.journal, false).await {
        Ok(journal) => Some(journal),
        Err(e) => {
            eprintln!("warning: {e}; the workflow pages stay empty");
            None
        }
    };
    let args = ConsoleArgs {
        console_addr: Some(command.addr),
        console_tls_cert: command.tls_cert,
        console_tls_key: command.tls_key,
    };
    let token = CancellationToken::new();
    super::operator::cancel_on_signals(token.clone());
    let url = args.start(Access::tokens(base), journal, token.clone()).await.map_err(|e| e.to_string())?;
    println!("console: {}", url.unwrap_or_default());
    token.cancelled().await;
    Ok(())
}
