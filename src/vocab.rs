//! The words bgslot prints and parses, in one place: the two slots and what kind they are, the
//! role a Service plays, a pair indexed by slot, and the operations bgslot performs. Every layer
//! speaks them; this module imports nothing of the crate.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

/// One of the two slots a release runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Slot {
    Blue,
    Green,
}

impl Slot {
    pub const ALL: [Slot; 2] = [Slot::Blue, Slot::Green];

    pub fn other(self) -> Slot {
        match self {
            Slot::Blue => Slot::Green,
            Slot::Green => Slot::Blue,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Slot::Blue => "blue",
            Slot::Green => "green",
        }
    }

    /// `blue` or `green`, exactly; anything else is not a slot.
    pub fn parse(text: &str) -> Option<Slot> {
        text.parse().ok()
    }
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Slot {
    type Err = String;

    fn from_str(text: &str) -> Result<Slot, String> {
        match text {
            "blue" => Ok(Slot::Blue),
            "green" => Ok(Slot::Green),
            other => Err(format!("'{other}' is not a slot: use blue or green")),
        }
    }
}

/// What a release's slots are: blocks of bgslot's own chart in the release itself, or releases
/// of the team's own chart that the release routes to. Every report names it as `mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Bundled,
    Router,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Bundled => "bundled",
            Mode::Router => "router",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a Service (or a slot) is for: production traffic, or the staged version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Production,
    Stage,
}

impl Role {
    pub const ALL: [Role; 2] = [Role::Production, Role::Stage];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Production => "production",
            Role::Stage => "stage",
        }
    }

    /// The slot playing this role when `production` is the production slot.
    pub fn slot(self, production: Slot) -> Slot {
        match self {
            Role::Production => production,
            Role::Stage => production.other(),
        }
    }

    /// The role `slot` plays when `production` is the production slot.
    pub fn of(slot: Slot, production: Slot) -> Role {
        if slot == production {
            Role::Production
        } else {
            Role::Stage
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(text: &str) -> Result<Role, String> {
        match text {
            "production" => Ok(Role::Production),
            "stage" => Ok(Role::Stage),
            other => Err(format!("'{other}' is not a role: use production or stage")),
        }
    }
}

/// One value per slot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PerSlot<T> {
    pub blue: T,
    pub green: T,
}

impl<T> PerSlot<T> {
    pub fn new(mut of: impl FnMut(Slot) -> T) -> PerSlot<T> {
        PerSlot {
            blue: of(Slot::Blue),
            green: of(Slot::Green),
        }
    }

    pub fn get(&self, slot: Slot) -> &T {
        match slot {
            Slot::Blue => &self.blue,
            Slot::Green => &self.green,
        }
    }

    pub fn get_mut(&mut self, slot: Slot) -> &mut T {
        match slot {
            Slot::Blue => &mut self.blue,
            Slot::Green => &mut self.green,
        }
    }

    /// Each slot with its value, blue first.
    pub fn iter(&self) -> impl Iterator<Item = (Slot, &T)> {
        Slot::ALL.into_iter().map(move |s| (s, self.get(s)))
    }
}

impl<T> std::ops::Index<Slot> for PerSlot<T> {
    type Output = T;
    fn index(&self, slot: Slot) -> &T {
        self.get(slot)
    }
}

impl<T> std::ops::IndexMut<Slot> for PerSlot<T> {
    fn index_mut(&mut self, slot: Slot) -> &mut T {
        self.get_mut(slot)
    }
}

/// What bgslot does to a release; its name appears in the lock, in errors, in reports, in
/// `--dry-run` plans and in the helm history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    Install,
    Deploy,
    Swap,
    Rollback,
    Clean,
    Release,
    Recover,
    Status,
    History,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Install => "install",
            Op::Deploy => "deploy",
            Op::Swap => "swap",
            Op::Rollback => "rollback",
            Op::Clean => "clean",
            Op::Release => "release",
            Op::Recover => "recover",
            Op::Status => "status",
            Op::History => "history",
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Op {
    type Err = String;

    fn from_str(text: &str) -> Result<Op, String> {
        [
            Op::Install,
            Op::Deploy,
            Op::Swap,
            Op::Rollback,
            Op::Clean,
            Op::Release,
            Op::Recover,
            Op::Status,
            Op::History,
        ]
        .into_iter()
        .find(|op| op.as_str() == text)
        .ok_or_else(|| format!("'{text}' is not a bgslot operation"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_read_back_as_they_print() {
        for slot in Slot::ALL {
            assert_eq!(slot.to_string().parse::<Slot>(), Ok(slot));
            assert_eq!(slot.other().other(), slot);
        }
        for role in Role::ALL {
            assert_eq!(role.to_string().parse::<Role>(), Ok(role));
        }
        for op in [
            "install", "deploy", "swap", "rollback", "clean", "release", "recover",
        ] {
            assert_eq!(op.parse::<Op>().unwrap().to_string(), op);
        }
        assert!("purple".parse::<Slot>().is_err());
        assert!("Blue".parse::<Slot>().is_err());
        assert!("upgrade".parse::<Op>().is_err());
    }

    #[test]
    fn roles_follow_the_production_slot() {
        assert_eq!(Role::Stage.slot(Slot::Blue), Slot::Green);
        assert_eq!(Role::of(Slot::Green, Slot::Green), Role::Production);
        let mut pair = PerSlot::new(|s| s.as_str().len());
        pair[Slot::Green] += 1;
        assert_eq!((pair.blue, pair.green), (4, 6));
        assert_eq!(
            serde_json::to_value(pair).unwrap(),
            serde_json::json!({"blue": 4, "green": 6})
        );
    }
}
