//! `geolocation`: where a message is about, and where the agent is.
//!
//! The plugin knows a built-in table of 27 world cities (with a few common
//! aliases such as "NYC" or "Sao Paulo") and offers:
//!
//! * the `geolocation` service, with methods
//!   * `locate` — `{"text": "..."}` → the first known city mentioned in the
//!     text (case-insensitive, whole words only), or `null`;
//!   * `current` — no arguments → the configured home city (config key
//!     `home`, default "London"); an unknown home city is an error that names it;
//!   * `cities` — no arguments → every known place;
//! * the `location` provider, which supplies the home city as a [`Place`]
//!   (cached by the host for 60 seconds).
//!
//! Everything is offline: no lookup leaves the process.

use agent_host_plugin_sdk::{
    json, Error, ErrorKind, Plugin, Provider, Result, Runtime, Service, Value,
};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The service's name, as other plugins call it.
pub const SERVICE: &str = "geolocation";

/// The home city used when the config names none.
pub const DEFAULT_HOME: &str = "London";

/// A place on Earth.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Place {
    /// The city's usual English name, such as "New York".
    pub name: String,
    /// The country it is in.
    pub country: String,
    /// Latitude in degrees, north positive.
    pub lat: f64,
    /// Longitude in degrees, east positive.
    pub lon: f64,
}

/// One row of the built-in city table.
struct City {
    name: &'static str,
    country: &'static str,
    lat: f64,
    lon: f64,
    /// Other spellings the city is found by (lowercase).
    aliases: &'static [&'static str],
}

impl City {
    fn place(&self) -> Place {
        Place {
            name: self.name.to_string(),
            country: self.country.to_string(),
            lat: self.lat,
            lon: self.lon,
        }
    }

    /// The city's name and aliases, lowercase.
    fn spellings(&self) -> impl Iterator<Item = String> + '_ {
        std::iter::once(self.name.to_lowercase()).chain(self.aliases.iter().map(|a| a.to_string()))
    }
}

const fn city(
    name: &'static str,
    country: &'static str,
    lat: f64,
    lon: f64,
    aliases: &'static [&'static str],
) -> City {
    City {
        name,
        country,
        lat,
        lon,
        aliases,
    }
}

/// The built-in table: 27 large cities spread over every inhabited continent.
static CITIES: &[City] = &[
    city("London", "United Kingdom", 51.5074, -0.1278, &[]),
    city("Paris", "France", 48.8566, 2.3522, &[]),
    city("Berlin", "Germany", 52.52, 13.405, &[]),
    city("Madrid", "Spain", 40.4168, -3.7038, &[]),
    city("Rome", "Italy", 41.9028, 12.4964, &["roma"]),
    city("Amsterdam", "Netherlands", 52.3676, 4.9041, &[]),
    city("Stockholm", "Sweden", 59.3293, 18.0686, &[]),
    city("Moscow", "Russia", 55.7558, 37.6173, &[]),
    city("Istanbul", "Turkey", 41.0082, 28.9784, &[]),
    city("Cairo", "Egypt", 30.0444, 31.2357, &[]),
    city("Lagos", "Nigeria", 6.5244, 3.3792, &[]),
    city("Nairobi", "Kenya", -1.2921, 36.8219, &[]),
    city(
        "Cape Town",
        "South Africa",
        -33.9249,
        18.4241,
        &["capetown"],
    ),
    city("Dubai", "United Arab Emirates", 25.2048, 55.2708, &[]),
    city("Mumbai", "India", 19.076, 72.8777, &["bombay"]),
    city("Delhi", "India", 28.7041, 77.1025, &["new delhi"]),
    city("Singapore", "Singapore", 1.3521, 103.8198, &[]),
    city("Hong Kong", "China", 22.3193, 114.1694, &[]),
    city("Beijing", "China", 39.9042, 116.4074, &["peking"]),
    city("Tokyo", "Japan", 35.6762, 139.6503, &[]),
    city("Sydney", "Australia", -33.8688, 151.2093, &[]),
    city(
        "New York",
        "United States",
        40.7128,
        -74.006,
        &["nyc", "new york city"],
    ),
    city("Los Angeles", "United States", 34.0522, -118.2437, &[]),
    city(
        "Mexico City",
        "Mexico",
        19.4326,
        -99.1332,
        &["ciudad de méxico", "cdmx"],
    ),
    city("São Paulo", "Brazil", -23.5505, -46.6333, &["sao paulo"]),
    city("Buenos Aires", "Argentina", -34.6037, -58.3816, &[]),
    city("Toronto", "Canada", 43.6532, -79.3832, &[]),
];

/// Every place in the built-in table, in table order.
pub fn cities() -> Vec<Place> {
    CITIES.iter().map(City::place).collect()
}

/// The known city named `name` (or one of its aliases), ignoring case and
/// surrounding spaces.
pub fn find_city(name: &str) -> Option<Place> {
    let wanted = name.trim().to_lowercase();
    CITIES
        .iter()
        .find(|city| city.spellings().any(|spelling| spelling == wanted))
        .map(City::place)
}

/// Whether `text[start..end]` stands alone: no letter or digit touches it.
fn is_whole_word(text: &str, start: usize, end: usize) -> bool {
    let before = text[..start].chars().next_back();
    let after = text[end..].chars().next();
    !before.is_some_and(char::is_alphanumeric) && !after.is_some_and(char::is_alphanumeric)
}

/// The first known city mentioned in `text`, case-insensitive and as a whole
/// word ("Paris" matches "paris?" but not "Parisian"). When two names start at
/// the same place the longer wins ("New York City" over "New York").
pub fn locate(text: &str) -> Option<Place> {
    let haystack = text.to_lowercase();
    let mut best: Option<(usize, usize, &City)> = None;
    for city in CITIES {
        for spelling in city.spellings() {
            let mut from = 0;
            while let Some(offset) = haystack[from..].find(&spelling) {
                let start = from + offset;
                let end = start + spelling.len();
                if is_whole_word(&haystack, start, end) {
                    // Earliest match first; at the same start, the longest name.
                    let key = (start, std::cmp::Reverse(spelling.len()));
                    let better = match best {
                        None => true,
                        Some((best_start, best_len, _)) => {
                            key < (best_start, std::cmp::Reverse(best_len))
                        }
                    };
                    if better {
                        best = Some((start, spelling.len(), city));
                    }
                    break;
                }
                // Step past this occurrence's first character and look again.
                from = start + haystack[start..].chars().next().map_or(1, char::len_utf8);
            }
        }
    }
    best.map(|(_, _, city)| city.place())
}

/// The configured home city (config key `home`).
pub fn current(rt: &Runtime<'_>) -> Result<Place> {
    let home = match rt.config_value("home")? {
        Value::Null => DEFAULT_HOME.to_string(),
        Value::String(name) => name,
        other => {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!("config `home` must be a city name, not {other}"),
            ))
        }
    };
    find_city(&home).ok_or_else(|| {
        let known: Vec<&str> = CITIES.iter().map(|c| c.name).collect();
        Error::new(
            ErrorKind::NotFound,
            format!(
                "unknown home city '{home}' (config `home`); known cities: {}",
                known.join(", ")
            ),
        )
    })
}

/// The arguments of the `locate` method.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocateRequest {
    /// The text to search for a city name.
    pub text: String,
}

/// The JSON Schema of the plugin's config.
pub fn config_schema() -> Value {
    let names: Vec<&str> = CITIES.iter().map(|c| c.name).collect();
    json!({
        "type": "object",
        "properties": {
            "home": {
                "type": "string",
                "default": DEFAULT_HOME,
                "description": format!(
                    "The agent's home city, reported by `current` and the `location` provider. One of: {}.",
                    names.join(", ")
                )
            }
        },
        "additionalProperties": false
    })
}

/// Builds the `geolocation` plugin.
pub fn plugin() -> Plugin {
    Plugin::new("geolocation", "1.0.0")
        // Reading its own config is a permission like any other.
        .permission("config:*")
        .description("Finds known world cities in text and reports the agent's home city")
        .author("agent-host examples")
        .license("MIT OR Apache-2.0")
        .config_schema(config_schema())
        .default_config(json!({ "home": DEFAULT_HOME }))
        .service(
            Service::new(SERVICE, ())
                .description(
                    "locate {text} -> Place or null; current -> Place (the home city); cities -> [Place]",
                )
                .on_start(|_, rt| {
                    // Fail early, at start, on a home city the table lacks.
                    let home = current(rt)?;
                    rt.debug(format!("home city: {}, {}", home.name, home.country));
                    Ok(())
                })
                .method("locate", |_, request: LocateRequest, _rt| {
                    Ok(locate(&request.text))
                })
                .method("current", |_, (): (), rt| current(rt))
                .method("cities", |_, (): (), _rt| Ok(cities())),
        )
        .provider(
            Provider::new("location")
                .description("The agent's home city: {name, country, lat, lon}")
                .cache(Duration::from_secs(60), false)
                .get(|_msg, rt| current(rt)),
        )
}

agent_host_plugin_sdk::export_plugin!(plugin);

#[cfg(test)]
mod tests {
    use super::*;
    use agent_host_plugin_sdk::testing::TestHost;

    #[test]
    fn manifest_is_valid() {
        let manifest = plugin().manifest();
        manifest.validate().unwrap();
        assert!(plugin().problems().is_empty());
        assert_eq!(
            manifest.services[0].methods,
            ["locate", "current", "cities"]
        );
        assert_eq!(manifest.providers[0].cache.unwrap().ttl_ms, 60_000);
    }

    #[test]
    fn the_table_is_sane() {
        assert!(CITIES.len() >= 25);
        for city in CITIES {
            assert!((-90.0..=90.0).contains(&city.lat), "{}", city.name);
            assert!((-180.0..=180.0).contains(&city.lon), "{}", city.name);
            assert_eq!(find_city(city.name).unwrap().name, city.name);
        }
    }

    #[test]
    fn locate_finds_cities_case_insensitively() {
        assert_eq!(
            locate("What's the weather in London?").unwrap().name,
            "London"
        );
        assert_eq!(locate("is it raining in TOKYO").unwrap().name, "Tokyo");
        assert_eq!(
            locate("flying to new york tomorrow").unwrap().name,
            "New York"
        );
        assert_eq!(locate("NYC!").unwrap().name, "New York");
        assert_eq!(locate("Sao Paulo or São Paulo").unwrap().name, "São Paulo");
        assert_eq!(locate("visiting Mexico City").unwrap().country, "Mexico");
    }

    #[test]
    fn locate_needs_whole_words_and_takes_the_first_city() {
        assert_eq!(locate("I love Parisian cafés"), None);
        assert_eq!(locate("Romeo and Juliet"), None);
        assert_eq!(locate("the plan is good"), None);
        assert_eq!(locate(""), None);
        assert_eq!(locate("from Berlin to Paris").unwrap().name, "Berlin");
        assert_eq!(locate("Parisian, then Paris").unwrap().name, "Paris");
    }

    #[test]
    fn service_locate_returns_a_place_or_null() {
        let host = TestHost::new("geolocation");
        let loaded = host.load(plugin()).unwrap();
        let place = loaded
            .call_service(
                "geolocation",
                "locate",
                json!({"text": "weather in sydney"}),
            )
            .unwrap();
        assert_eq!(place["name"], "Sydney");
        assert_eq!(place["country"], "Australia");
        assert!(place["lat"].as_f64().unwrap() < 0.0);
        let nothing = loaded
            .call_service("geolocation", "locate", json!({"text": "nowhere"}))
            .unwrap();
        assert_eq!(nothing, Value::Null);
        let error = loaded
            .call_service("geolocation", "locate", json!({"txt": "x"}))
            .unwrap_err();
        assert_eq!(error.kind(), ErrorKind::InvalidInput);
    }

    #[test]
    fn current_defaults_to_london() {
        let host = TestHost::new("geolocation");
        let loaded = host.load(plugin()).unwrap();
        let place: Place = serde_json::from_value(
            loaded
                .call_service("geolocation", "current", Value::Null)
                .unwrap(),
        )
        .unwrap();
        assert_eq!(place, find_city("London").unwrap());
        assert_eq!(loaded.provide("location", "hi").unwrap()["name"], "London");
    }

    #[test]
    fn current_follows_the_config() {
        let host = TestHost::new("geolocation").with_config(json!({"home": "cape town"}));
        let loaded = host.load(plugin()).unwrap();
        let place = loaded
            .call_service("geolocation", "current", json!(null))
            .unwrap();
        assert_eq!(place["name"], "Cape Town");
        assert_eq!(
            loaded.provide("location", "").unwrap()["country"],
            "South Africa"
        );
    }

    #[test]
    fn an_unknown_home_city_is_named_in_the_error() {
        let host = TestHost::new("geolocation").with_config(json!({"home": "Atlantis"}));
        let error = host.load(plugin()).err().unwrap();
        assert_eq!(error.kind(), ErrorKind::NotFound);
        assert!(error.message().contains("'Atlantis'"), "{error:?}");

        let error = current(&host.runtime()).unwrap_err();
        assert!(error.message().contains("Atlantis"), "{error:?}");
    }

    #[test]
    fn cities_lists_the_table() {
        let host = TestHost::new("geolocation");
        let loaded = host.load(plugin()).unwrap();
        let list = loaded
            .call_service("geolocation", "cities", json!(null))
            .unwrap();
        assert_eq!(list.as_array().unwrap().len(), CITIES.len());
    }
}
