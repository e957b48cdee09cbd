//! `mq user ...`, `mq acl ...`, and the global `--tls` / `--access-key` flags that every
//! command's connections use.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use client::admin::Admin;
use client::{ClientTls, Credentials};
use serde_json::json;

use crate::CliResult;

/// How `mq` reaches a secured broker; applies to every command.
#[derive(Debug, Args)]
pub(crate) struct SecurityArgs {
    /// Speak TLS to the broker, trusting --tls-ca or else the platform's CAs.
    #[arg(long, global = true, env = "MQ_TLS")]
    tls: bool,
    /// PEM file of the CA (or self-signed certificate) the broker's certificate must chain
    /// to; implies --tls.
    #[arg(long, global = true, value_name = "FILE", env = "MQ_TLS_CA")]
    tls_ca: Option<PathBuf>,
    /// PEM client certificate for a broker that asks for one (mutual TLS); with --tls-key.
    #[arg(long, global = true, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, global = true, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Access key of the user to authenticate as (a broker with --auth on).
    #[arg(long, global = true, env = "MQ_ACCESS_KEY", requires = "secret_key")]
    access_key: Option<String>,
    /// Secret key of --access-key; never sent, it signs the broker's challenge.
    #[arg(
        long,
        global = true,
        env = "MQ_SECRET_KEY",
        hide_env_values = true,
        requires = "access_key"
    )]
    secret_key: Option<String>,
}

impl SecurityArgs {
    /// Makes the flags the defaults of every connection this process opens.
    pub(crate) fn apply(&self) -> CliResult {
        let client_cert = self.tls_cert.as_deref().zip(self.tls_key.as_deref());
        let tls = match &self.tls_ca {
            Some(ca) => Some(ClientTls::with_ca_file(ca, client_cert)?),
            None if self.tls => Some(ClientTls::with_platform_roots(client_cert)?),
            None => None,
        };
        let credentials = self
            .access_key
            .as_ref()
            .zip(self.secret_key.as_ref())
            .map(|(ak, sk)| Credentials::new(ak, sk));
        client::set_default_security(tls, credentials);
        Ok(())
    }
}

#[derive(Debug, Subcommand)]
pub(crate) enum UserCmd {
    /// Add a user; prints its access key and secret key as JSON, the secret this once.
    Add {
        /// User name, which is its access key.
        name: String,
        /// An administrator may do everything (users and rules included).
        #[arg(long)]
        admin: bool,
    },
    /// List users as JSON lines (never their secrets).
    List,
    /// Remove a user and its rules.
    Remove {
        /// User name.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum AclCmd {
    /// Allow (or with --deny, refuse) actions on a topic or group to a user; replaces the
    /// user's rule on the same resource. A deny wins over any allow; without an allow
    /// everything is refused (administrators excepted). %RETRY%G and %DLQ%G follow group G.
    Set {
        /// User name.
        user: String,
        /// topic:NAME, group:NAME, or a prefix such as topic:orders-*.
        resource: String,
        /// Comma-separated: pub, sub, admin.
        #[arg(value_delimiter = ',')]
        actions: Vec<String>,
        /// Refuse the actions instead of allowing them.
        #[arg(long)]
        deny: bool,
    },
    /// List rules as JSON lines, of one user or all.
    List {
        /// Only this user's rules.
        user: Option<String>,
    },
    /// Remove a user's rule on a resource.
    Remove {
        /// User name.
        user: String,
        /// The resource, as it was set.
        resource: String,
    },
}

pub(crate) async fn user(broker: &str, cmd: UserCmd) -> CliResult {
    let admin = Admin::connect(broker).await?;
    match cmd {
        UserCmd::Add {
            name,
            admin: is_admin,
        } => {
            let keys = admin.add_user(&name, is_admin).await?;
            println!(
                "{}",
                json!({"access_key": keys.access_key, "secret_key": keys.secret_key, "admin": is_admin})
            );
            eprintln!("mq: keep the secret key: the broker does not show it again");
        }
        UserCmd::List => {
            for u in admin.list_users().await? {
                println!(
                    "{}",
                    json!({"access_key": u.access_key, "admin": u.admin, "rules": u.rules})
                );
            }
        }
        UserCmd::Remove { name } => {
            admin.remove_user(&name).await?;
            println!("removed user {name}");
        }
    }
    Ok(())
}

pub(crate) async fn acl(broker: &str, cmd: AclCmd) -> CliResult {
    let admin = Admin::connect(broker).await?;
    match cmd {
        AclCmd::Set {
            user,
            resource,
            actions,
            deny,
        } => {
            let actions: Vec<&str> = actions.iter().map(String::as_str).collect();
            let decision = if deny { "deny" } else { "allow" };
            admin.set_acl(&user, &resource, &actions, decision).await?;
            println!("{decision} {} on {resource} for {user}", actions.join(","));
        }
        AclCmd::List { user } => {
            for r in admin.list_acls(user.as_deref()).await? {
                println!(
                    "{}",
                    json!({"user": r.user, "resource": r.resource, "actions": r.actions, "decision": r.decision})
                );
            }
        }
        AclCmd::Remove { user, resource } => {
            admin.remove_acl(&user, &resource).await?;
            println!("removed the rule of {user} on {resource}");
        }
    }
    Ok(())
}
