//! The admin console's commands, parsed from the text of a simple query.

/// One console command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `SHOW NODES`: the routing table with per-node counters.
    ShowNodes,
    /// `SHOW POOLS`: server and client connections per (node, database, user).
    ShowPools,
    /// `SHOW CLIENTS`: every connected client.
    ShowClients,
    /// `SHOW SERVERS`: every server connection, idle or in use.
    ShowServers,
    /// `SHOW STATS`: requests and bytes per database (PgBouncer's columns).
    ShowStats,
    /// `SHOW DATABASES`: the databases clients use (PgBouncer's columns).
    ShowDatabases,
    /// `SHOW LISTS`: counts of databases, users, pools, clients, servers (PgBouncer's rows).
    ShowLists,
    /// `SHOW COUNTERS`: pgrouter's counters since start-up, one per row.
    ShowCounters,
    /// `SHOW CONFIG`: the configuration in force, secrets masked.
    ShowConfig,
    /// `SHOW VERSION`.
    ShowVersion,
    /// `SHOW HELP` (or `HELP`): the commands.
    Help,
    /// `RELOAD`: re-read the configuration file.
    Reload,
    /// `DISABLE NODE name`: no more reads on the node.
    DisableNode(String),
    /// `ENABLE NODE name`: reads may return to the node.
    EnableNode(String),
}

/// The commands, as the console lists them in help and in its unknown-command error.
pub const COMMANDS: &[(&str, &str)] = &[
    (
        "SHOW NODES",
        "each node: role, status, weight, lag, reads served, last change",
    ),
    (
        "SHOW POOLS",
        "client and server connections per database and user (PgBouncer's columns)",
    ),
    ("SHOW CLIENTS", "connected clients"),
    ("SHOW SERVERS", "server connections, idle and in use"),
    (
        "SHOW STATS",
        "requests and bytes per database (PgBouncer's columns)",
    ),
    ("SHOW DATABASES", "databases in use (PgBouncer's columns)"),
    (
        "SHOW LISTS",
        "counts of databases, users, pools, clients, servers",
    ),
    ("SHOW COUNTERS", "pgrouter's counters since start-up"),
    ("SHOW CONFIG", "the configuration in force (secrets masked)"),
    ("SHOW VERSION", "pgrouter's version"),
    ("RELOAD", "re-read the configuration file"),
    ("DISABLE NODE name", "take a node out of read rotation"),
    ("ENABLE NODE name", "put a node back into read rotation"),
    ("SHOW HELP", "this list"),
];

/// Why a text is not a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownCommand(pub String);

/// Parses one statement (no `;` inside). `Ok(None)` for an empty one.
pub fn parse(statement: &str) -> Result<Option<Command>, UnknownCommand> {
    let words: Vec<&str> = statement.split_whitespace().collect();
    let upper: Vec<String> = words.iter().map(|w| w.to_ascii_uppercase()).collect();
    let upper: Vec<&str> = upper.iter().map(String::as_str).collect();
    let command = match upper.as_slice() {
        [] => return Ok(None),
        ["SHOW", "NODES"] | ["SHOW", "POOL_NODES"] => Command::ShowNodes,
        ["SHOW", "POOLS"] => Command::ShowPools,
        ["SHOW", "CLIENTS"] => Command::ShowClients,
        ["SHOW", "SERVERS"] => Command::ShowServers,
        ["SHOW", "STATS"] => Command::ShowStats,
        ["SHOW", "DATABASES"] => Command::ShowDatabases,
        ["SHOW", "LISTS"] => Command::ShowLists,
        ["SHOW", "COUNTERS"] => Command::ShowCounters,
        ["SHOW", "CONFIG"] => Command::ShowConfig,
        ["SHOW", "VERSION"] => Command::ShowVersion,
        ["SHOW", "HELP"] | ["HELP"] => Command::Help,
        ["RELOAD"] => Command::Reload,
        ["DISABLE", "NODE", _] => Command::DisableNode(node_name(words[2])?),
        ["ENABLE", "NODE", _] => Command::EnableNode(node_name(words[2])?),
        _ => return Err(UnknownCommand(statement.trim().to_owned())),
    };
    Ok(Some(command))
}

/// A node name as typed: bare, or in single or double quotes.
fn node_name(word: &str) -> Result<String, UnknownCommand> {
    let unquoted = ['"', '\'']
        .iter()
        .find_map(|q| word.strip_prefix(*q).and_then(|w| w.strip_suffix(*q)))
        .unwrap_or(word);
    if unquoted.is_empty() {
        return Err(UnknownCommand(word.to_owned()));
    }
    Ok(unquoted.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn commands() {
        let cases: &[(&str, Option<Command>)] = &[
            ("SHOW NODES", Some(Command::ShowNodes)),
            ("  show   nodes ", Some(Command::ShowNodes)),
            ("show pool_nodes", Some(Command::ShowNodes)),
            ("Show Pools", Some(Command::ShowPools)),
            ("SHOW CLIENTS", Some(Command::ShowClients)),
            ("SHOW SERVERS", Some(Command::ShowServers)),
            ("SHOW STATS", Some(Command::ShowStats)),
            ("show databases", Some(Command::ShowDatabases)),
            ("SHOW LISTS", Some(Command::ShowLists)),
            ("SHOW COUNTERS", Some(Command::ShowCounters)),
            ("show config", Some(Command::ShowConfig)),
            ("SHOW VERSION", Some(Command::ShowVersion)),
            ("help", Some(Command::Help)),
            ("reload", Some(Command::Reload)),
            ("DISABLE NODE pg1", Some(Command::DisableNode("pg1".into()))),
            (
                "disable node \"Pg1\"",
                Some(Command::DisableNode("Pg1".into())),
            ),
            ("enable node 'pg2'", Some(Command::EnableNode("pg2".into()))),
            ("", None),
            ("   \n ", None),
        ];
        for (text, expected) in cases {
            assert_eq!(parse(text).as_ref().ok(), Some(expected), "{text:?}");
        }
        for bad in [
            "SELECT 1",
            "SHOW",
            "SHOW NODES NOW",
            "DISABLE NODE",
            "DISABLE NODE a b",
            "ENABLE NODE ''",
            "DROP NODE pg1",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn any_text_parses_or_is_refused_without_panicking(text in "\\PC{0,64}") {
            let _ = parse(&text);
        }
    }
}
