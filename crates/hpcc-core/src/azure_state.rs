//! Azure's provisioning and health states of a cache, typed. Azure adds values over time, so each enum keeps an
//! unknown value verbatim (`Other`) rather than failing. `status.provisioningState`/`healthState` show them as
//! parsed: a known value in the spec's spelling, an unknown one verbatim.
//! Values: the `provisioningState` and `health.state` enums of the storagecache 2026-08-01 spec
//! (tests/fixtures/azure-specs/storagecache-2026-08-01/openapi.caches-excerpt.json).

macro_rules! azure_enum {
    ($(#[doc = $doc:literal])* $name:ident { $($variant:ident),* $(,)? }) => {
        $(#[doc = $doc])*
        #[derive(Clone, Debug, PartialEq, Eq)]
        pub enum $name {
            $($variant,)*
            /// A value this operator does not know, kept verbatim.
            Other(String),
        }

        impl $name {
            /// Parses Azure's string (case-insensitively, as ARM compares enum values).
            pub fn parse(s: &str) -> Self {
                $(if s.eq_ignore_ascii_case(stringify!($variant)) {
                    return Self::$variant;
                })*
                Self::Other(s.to_string())
            }

            pub fn as_str(&self) -> &str {
                match self {
                    $(Self::$variant => stringify!($variant),)*
                    Self::Other(s) => s,
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

azure_enum! {
    /// `properties.provisioningState`.
    ProvisioningState { Succeeded, Failed, Canceled, Creating, Deleting, Updating }
}

azure_enum! {
    /// `properties.health.state`.
    HealthState {
        Unknown, Healthy, Degraded, Down, Transitioning, Stopping, Stopped, Upgrading, Flushing, WaitingForKey,
        StartFailed, UpgradeFailed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values_parse_case_insensitively_and_unknown_ones_are_kept() {
        assert_eq!(ProvisioningState::parse("succeeded"), ProvisioningState::Succeeded);
        assert_eq!(HealthState::parse("WaitingForKey"), HealthState::WaitingForKey);
        let new = HealthState::parse("Hibernating");
        assert_eq!(new, HealthState::Other("Hibernating".into()));
        assert_eq!(new.as_str(), "Hibernating");
        assert_eq!(ProvisioningState::parse("").as_str(), "");
    }
}
