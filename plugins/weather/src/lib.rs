//! `weather`: answers weather questions for the places a message mentions.
//!
//! The plugin offers
//!
//! * the `GET_WEATHER` action, for messages that mention weather, temperature,
//!   rain, snow or a forecast. It finds the place with the `geolocation`
//!   service (`locate` on the text, else `current`, the agent's home city),
//!   asks its own `weather` service for the weather there, emits
//!   `weather:reported` with the [`Weather`] as payload and answers with a
//!   sentence such as "It is 14.2°C and cloudy in London.";
//! * the `weather` service, with one method, `get_weather`
//!   (`{"location", "lat", "lon"}` → [`Weather`]), whose answers are cached per
//!   location for `cache_minutes`; an hourly timer drops expired entries;
//! * the `weather-context` provider: the weather at the agent's home city.
//!
//! # Online and offline
//!
//! With `base_url` set in the config, the service asks a weather API through
//! the `http-client` service: `GET {base_url}/current?lat=..&lon=..&units=..`,
//! which must answer `{"temperature": 14.2, "conditions": "cloudy"}`; the
//! report's `source` is `"api"`.
//!
//! Without `base_url` (absent, null or empty) the plugin works offline and
//! reports a deterministic climate estimate (`source` `"offline-estimate"`),
//! and its reply says that it is an estimate. See [`offline_estimate_celsius`]
//! for the model.

use agent_host_plugin_sdk::{
    json, Action, ActionResult, Error, ErrorKind, Message, Plugin, Provider, Result, Runtime,
    Service, Timer, Value,
};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The service's name.
pub const SERVICE: &str = "weather";

/// The event emitted for every weather report the action gives.
pub const REPORTED_EVENT: &str = "weather:reported";

/// `source` of a report that came from the weather API.
pub const SOURCE_API: &str = "api";

/// `source` of a report estimated offline.
pub const SOURCE_ESTIMATE: &str = "offline-estimate";

/// How long a report stays cached when the config does not say.
pub const DEFAULT_CACHE_MINUTES: f64 = 10.0;

/// How often the service drops expired cache entries.
pub const CLEANUP_PERIOD: Duration = Duration::from_secs(3600);

/// The words that make `GET_WEATHER` apply to a message (matched in lowercase).
pub const TRIGGER_WORDS: [&str; 5] = ["weather", "temperature", "rain", "snow", "forecast"];

/// A place, as the `geolocation` service describes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Place {
    /// The city's name.
    pub name: String,
    /// Its country.
    #[serde(default)]
    pub country: String,
    /// Latitude in degrees, north positive.
    pub lat: f64,
    /// Longitude in degrees, east positive.
    pub lon: f64,
}

/// The arguments of the service's `get_weather` method.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WeatherRequest {
    /// A name for the place, used in the reply and as the cache key.
    pub location: String,
    /// Latitude in degrees, from -90 to 90.
    pub lat: f64,
    /// Longitude in degrees, from -180 to 180.
    pub lon: f64,
}

/// A weather report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Weather {
    /// The place's name, as asked.
    pub location: String,
    /// The temperature, in °C for metric units and °F for imperial.
    pub temperature: f64,
    /// `metric` or `imperial`.
    pub units: Units,
    /// A short description, such as "cloudy" (or "mild" for an estimate).
    pub conditions: String,
    /// Where the report comes from: `api` or `offline-estimate`.
    pub source: String,
}

impl Weather {
    /// Whether this report is an offline estimate rather than a reading.
    pub fn is_estimate(&self) -> bool {
        self.source == SOURCE_ESTIMATE
    }

    /// The report as one sentence.
    pub fn describe(&self) -> String {
        let symbol = self.units.symbol();
        if self.is_estimate() {
            format!(
                "It is probably around {:.1}{symbol} ({}) in {}. This is an offline estimate \
                 from latitude and season, not a live reading.",
                self.temperature, self.conditions, self.location
            )
        } else {
            format!(
                "It is {:.1}{symbol} and {} in {}.",
                self.temperature, self.conditions, self.location
            )
        }
    }
}

/// Temperature units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Units {
    /// Degrees Celsius.
    #[default]
    Metric,
    /// Degrees Fahrenheit.
    Imperial,
}

impl Units {
    /// The name used in the config and in API queries.
    pub fn as_str(self) -> &'static str {
        match self {
            Units::Metric => "metric",
            Units::Imperial => "imperial",
        }
    }

    /// The temperature unit's symbol.
    pub fn symbol(self) -> &'static str {
        match self {
            Units::Metric => "°C",
            Units::Imperial => "°F",
        }
    }

    /// Converts a Celsius temperature into these units.
    pub fn from_celsius(self, celsius: f64) -> f64 {
        match self {
            Units::Metric => celsius,
            Units::Imperial => celsius * 9.0 / 5.0 + 32.0,
        }
    }
}

/// The plugin's config, read on every call so that a reload applies at once.
#[derive(Debug, Clone, PartialEq)]
struct Settings {
    /// The API's base URL without a trailing slash; `None` means offline.
    base_url: Option<String>,
    units: Units,
    cache_for: Duration,
}

fn invalid(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidInput, message)
}

impl Settings {
    fn from_config(rt: &Runtime<'_>) -> Result<Self> {
        let base_url = match rt.config_value("base_url")? {
            Value::Null => None,
            Value::String(url) => {
                let url = url.trim().trim_end_matches('/');
                (!url.is_empty()).then(|| url.to_string())
            }
            other => {
                return Err(invalid(format!(
                    "config `base_url` must be a URL string or null, not {other}"
                )))
            }
        };
        let units = match rt.config_value("units")? {
            Value::Null => Units::default(),
            Value::String(units) if units == "metric" => Units::Metric,
            Value::String(units) if units == "imperial" => Units::Imperial,
            other => {
                return Err(invalid(format!(
                    "config `units` must be \"metric\" or \"imperial\", not {other}"
                )))
            }
        };
        let minutes = match rt.config_value("cache_minutes")? {
            Value::Null => DEFAULT_CACHE_MINUTES,
            other => other.as_f64().filter(|m| *m >= 0.0).ok_or_else(|| {
                invalid(format!(
                    "config `cache_minutes` must be a number of minutes, 0 or more, not {other}"
                ))
            })?,
        };
        let cache_for = Duration::try_from_secs_f64(minutes * 60.0)
            .map_err(|_| invalid(format!("config `cache_minutes` is too large: {minutes}")))?;
        Ok(Self {
            base_url,
            units,
            cache_for,
        })
    }
}

/// The day of the year (1 for January 1st, up to 366) of a day counted from
/// 1970-01-01 (day 0), in the proleptic Gregorian calendar.
pub fn day_of_year(days_since_epoch: i64) -> u32 {
    // Howard Hinnant's civil_from_days, in a year that starts on March 1st.
    let z = days_since_epoch + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let march_day = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    // `march_day` 0 is March 1st; 306 is January 1st of the next calendar year.
    let day = if march_day >= 306 {
        march_day - 306 + 1
    } else {
        let year = year_of_era + era * 400;
        let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
        march_day + 59 + i64::from(leap) + 1
    };
    u32::try_from(day).unwrap_or(1)
}

/// Today's day of the year in UTC.
pub fn today() -> u32 {
    let days = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86_400);
    day_of_year(i64::try_from(days).unwrap_or(0))
}

/// The offline estimate of the temperature, in °C, at latitude `lat` on day
/// `day` of the year. Deterministic: the same inputs always give the same
/// value, rounded to 0.1 °C.
///
/// The model is a rough climatology, not a forecast:
///
/// * the annual mean falls with the square of the latitude, from 27 °C at the
///   equator to 12 °C at 50° and about -22 °C at the poles:
///   `mean = 27 - 0.006 * lat²`;
/// * the seasonal swing grows with the distance from the equator:
///   `amplitude = 1 + 0.15 * |lat|` (so ±8.5 °C at 50°);
/// * the warmest day is day 200 (mid-July) in the northern hemisphere and half
///   a year later in the southern one:
///   `estimate = mean + amplitude * cos(2π (day - 200) / 365.25)`, with the
///   cosine's sign flipped south of the equator.
///
/// Longitude, altitude, the sea and the weather itself are ignored.
pub fn offline_estimate_celsius(lat: f64, day: u32) -> f64 {
    let mean = 27.0 - 0.006 * lat * lat;
    let amplitude = 1.0 + 0.15 * lat.abs();
    let hemisphere = if lat < 0.0 { -1.0 } else { 1.0 };
    let phase = 2.0 * std::f64::consts::PI * (f64::from(day) - 200.0) / 365.25;
    let celsius = mean + hemisphere * amplitude * phase.cos();
    (celsius * 10.0).round() / 10.0
}

/// A word for an estimated Celsius temperature.
pub fn describe_temperature(celsius: f64) -> &'static str {
    match celsius {
        c if c < 0.0 => "freezing",
        c if c < 8.0 => "cold",
        c if c < 16.0 => "mild",
        c if c < 24.0 => "warm",
        _ => "hot",
    }
}

/// The offline report for a request, estimated for day `day` of the year.
pub fn offline_report(request: &WeatherRequest, units: Units, day: u32) -> Weather {
    let celsius = offline_estimate_celsius(request.lat, day);
    Weather {
        location: request.location.clone(),
        temperature: (units.from_celsius(celsius) * 10.0).round() / 10.0,
        units,
        conditions: describe_temperature(celsius).to_string(),
        source: SOURCE_ESTIMATE.to_string(),
    }
}

/// What the `http-client` service's `get` returns (headers ignored).
#[derive(Debug, Deserialize)]
struct HttpReply {
    status: u16,
    body: String,
}

/// What the weather API answers.
#[derive(Debug, Deserialize)]
struct ApiReading {
    temperature: f64,
    conditions: String,
}

/// The report from the weather API at `base_url`, through `http-client`.
fn api_report(
    request: &WeatherRequest,
    base_url: &str,
    units: Units,
    rt: &Runtime<'_>,
) -> Result<Weather> {
    let url = format!(
        "{base_url}/current?lat={}&lon={}&units={}",
        request.lat,
        request.lon,
        units.as_str()
    );
    let reply: HttpReply = rt
        .service("http-client")
        .call("get", &json!({ "url": url }))
        .map_err(|e| e.context(format!("weather API request {url}")))?;
    if !(200..300).contains(&reply.status) {
        let snippet: String = reply.body.chars().take(200).collect();
        return Err(Error::new(
            ErrorKind::Unavailable,
            format!(
                "weather API answered HTTP {} for {url}: {snippet}",
                reply.status
            ),
        ));
    }
    let reading: ApiReading = serde_json::from_str(&reply.body).map_err(|e| {
        Error::msg(format!(
            "weather API at {url} answered unexpected JSON (want {{\"temperature\": number, \"conditions\": string}}): {e}"
        ))
    })?;
    Ok(Weather {
        location: request.location.clone(),
        temperature: reading.temperature,
        units,
        conditions: reading.conditions,
        source: SOURCE_API.to_string(),
    })
}

fn check_request(request: &WeatherRequest) -> Result<()> {
    if request.location.trim().is_empty() {
        return Err(invalid("weather.get_weather: `location` is empty"));
    }
    if !(-90.0..=90.0).contains(&request.lat) {
        return Err(invalid(format!(
            "weather.get_weather: latitude {} is outside -90..90",
            request.lat
        )));
    }
    if !(-180.0..=180.0).contains(&request.lon) {
        return Err(invalid(format!(
            "weather.get_weather: longitude {} is outside -180..180",
            request.lon
        )));
    }
    Ok(())
}

/// A cached report and when it expires.
#[derive(Debug, Clone)]
struct Cached {
    weather: Weather,
    expires: Instant,
}

type Cache = Arc<Mutex<HashMap<String, Cached>>>;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section is a single map operation: a poisoned lock
    // cannot hide a half-made change.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Drops the entries expired at `now`; returns how many were dropped.
fn purge_expired(cache: &Mutex<HashMap<String, Cached>>, now: Instant) -> usize {
    let mut cache = lock(cache);
    let before = cache.len();
    cache.retain(|_, entry| entry.expires > now);
    before - cache.len()
}

/// The `weather` service's state.
#[derive(Default)]
struct WeatherService {
    cache: Cache,
    cleanup: Mutex<Option<Timer>>,
}

impl WeatherService {
    fn get_weather(&self, request: WeatherRequest, rt: &Runtime<'_>) -> Result<Weather> {
        check_request(&request)?;
        let settings = Settings::from_config(rt)?;
        let key = format!(
            "{}|{}",
            request.location.trim().to_lowercase(),
            settings.units.as_str()
        );
        let now = Instant::now();
        if let Some(entry) = lock(&self.cache).get(&key) {
            if entry.expires > now {
                return Ok(entry.weather.clone());
            }
        }
        let weather = match &settings.base_url {
            Some(base_url) => api_report(&request, base_url, settings.units, rt)?,
            None => offline_report(&request, settings.units, today()),
        };
        if !settings.cache_for.is_zero() {
            lock(&self.cache).insert(
                key,
                Cached {
                    weather: weather.clone(),
                    expires: now + settings.cache_for,
                },
            );
        }
        Ok(weather)
    }

    fn start(&self, rt: &Runtime<'_>) -> Result<()> {
        let settings = Settings::from_config(rt)?;
        match &settings.base_url {
            Some(url) => rt.info(format!(
                "weather service online: {url}, {} units",
                settings.units.as_str()
            )),
            None => rt.info(format!(
                "weather service offline: reports are estimates, {} units",
                settings.units.as_str()
            )),
        }
        let cache = Arc::clone(&self.cache);
        let timer = rt.every(CLEANUP_PERIOD, move |rt| {
            let dropped = purge_expired(&cache, Instant::now());
            if dropped > 0 {
                rt.debug(format!("dropped {dropped} expired weather reports"));
            }
            Ok(())
        })?;
        if let Some(previous) = lock(&self.cleanup).replace(timer) {
            rt.cancel_timer(previous)?;
        }
        Ok(())
    }

    fn stop(&self, rt: &Runtime<'_>) -> Result<()> {
        lock(&self.cache).clear();
        match lock(&self.cleanup).take() {
            Some(timer) => rt.cancel_timer(timer),
            None => Ok(()),
        }
    }
}

/// Whether a text asks about the weather.
pub fn mentions_weather(text: &str) -> bool {
    let text = text.to_lowercase();
    TRIGGER_WORDS.iter().any(|word| text.contains(word))
}

/// The place a text is about: the first city it names, else the agent's
/// home city.
fn find_place(text: &str, rt: &Runtime<'_>) -> Result<Place> {
    let geolocation = rt.service("geolocation");
    let found: Option<Place> = geolocation
        .call("locate", &json!({ "text": text }))
        .map_err(|e| e.context("geolocation.locate"))?;
    match found {
        Some(place) => Ok(place),
        None => geolocation
            .call("current", &())
            .map_err(|e| e.context("geolocation.current")),
    }
}

/// The weather at a place, through the host and this plugin's own service
/// (so the service's cache serves the action and the provider alike).
fn weather_at(place: &Place, rt: &Runtime<'_>) -> Result<Weather> {
    let request = WeatherRequest {
        location: place.name.clone(),
        lat: place.lat,
        lon: place.lon,
    };
    rt.service(SERVICE).call("get_weather", &request)
}

fn handle_get_weather(message: &Message<'_>, rt: &Runtime<'_>) -> Result<ActionResult> {
    let place = find_place(message.text(), rt)?;
    rt.check_cancelled()?;
    let weather = weather_at(&place, rt)?;
    rt.check_cancelled()?;
    rt.emit(REPORTED_EVENT, &weather)?;
    Ok(ActionResult::text(weather.describe())
        .with_data(&weather)?
        .with_metadata("source", weather.source.clone())
        .with_metadata("country", place.country))
}

/// The JSON Schema of the plugin's config.
pub fn config_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "base_url": {
                "type": ["string", "null"],
                "default": null,
                "description": "Base URL of the weather API (http:// or https://), queried as {base_url}/current?lat=..&lon=..&units=..; null or absent means offline estimates."
            },
            "units": {
                "type": "string",
                "enum": ["metric", "imperial"],
                "default": "metric",
                "description": "metric (°C) or imperial (°F)."
            },
            "cache_minutes": {
                "type": "number",
                "minimum": 0,
                "default": DEFAULT_CACHE_MINUTES,
                "description": "How long a report is reused for the same location; 0 disables the cache."
            }
        },
        "additionalProperties": false
    })
}

/// Builds the `weather` plugin.
pub fn plugin() -> Plugin {
    Plugin::new("weather", "1.0.0")
        .description("Answers weather questions, online through a weather API or offline with an estimate")
        .author("agent-host examples")
        .license("MIT OR Apache-2.0")
        .dependency("http-client@^1.0")
        .dependency("geolocation@^1.0")
        .permission("service:http-client")
        .permission("service:geolocation")
        .permission("event:emit:weather:*")
        .permission("config:*")
        .config_schema(config_schema())
        .default_config(json!({
            "base_url": null,
            "units": "metric",
            "cache_minutes": DEFAULT_CACHE_MINUTES,
        }))
        .on_load(|rt| {
            rt.info("weather plugin loaded");
            Ok(())
        })
        .service(
            Service::new(SERVICE, WeatherService::default())
                .description("get_weather {location, lat, lon} -> {location, temperature, units, conditions, source}")
                .on_start(WeatherService::start)
                .on_stop(WeatherService::stop)
                .method("get_weather", WeatherService::get_weather),
        )
        .action(
            Action::new("GET_WEATHER")
                .description("Tells the current weather in the city the message names, or at the agent's home city")
                .priority(10)
                .timeout(Duration::from_secs(10))
                .example("What's the weather in London?", "It is 14.2°C and cloudy in London.")
                .example("Is it raining in Tokyo?", "It is 18.0°C and light rain in Tokyo.")
                .validate(|message| mentions_weather(message.text()))
                .handler(handle_get_weather),
        )
        .provider(
            Provider::new("weather-context")
                .description("The weather at the agent's home city")
                .cache(Duration::from_secs(600), true)
                .get(|_message, rt| {
                    let place: Place = rt
                        .service("geolocation")
                        .call("current", &())
                        .map_err(|e| e.context("geolocation.current"))?;
                    weather_at(&place, rt)
                }),
        )
}

agent_host_plugin_sdk::export_plugin!(plugin);

#[cfg(test)]
mod tests {
    use super::*;
    use agent_host_plugin_sdk::testing::TestHost;
    use agent_host_plugin_sdk::Level;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn place(name: &str, country: &str, lat: f64, lon: f64) -> Value {
        json!({"name": name, "country": country, "lat": lat, "lon": lon})
    }

    /// A geolocation fake that knows London and Tokyo; home is Paris.
    fn fake_geolocation(method: &str, args: Value) -> Result<Value> {
        match method {
            "locate" => {
                let text = args["text"].as_str().unwrap_or_default().to_lowercase();
                Ok(if text.contains("london") {
                    place("London", "United Kingdom", 51.5074, -0.1278)
                } else if text.contains("tokyo") {
                    place("Tokyo", "Japan", 35.6762, 139.6503)
                } else {
                    Value::Null
                })
            }
            "current" => Ok(place("Paris", "France", 48.8566, 2.3522)),
            other => Err(Error::msg(format!("unexpected method {other}"))),
        }
    }

    /// An http-client fake that answers with `reply` and counts calls.
    fn fake_http(
        calls: &Arc<AtomicUsize>,
        urls: &Arc<Mutex<Vec<String>>>,
        reply: Value,
    ) -> impl Fn(&str, Value) -> Result<Value> + Send + Sync + 'static {
        let calls = Arc::clone(calls);
        let urls = Arc::clone(urls);
        move |method, args| {
            assert_eq!(method, "get");
            calls.fetch_add(1, Ordering::SeqCst);
            urls.lock()
                .unwrap()
                .push(args["url"].as_str().unwrap().to_string());
            Ok(reply.clone())
        }
    }

    fn offline_host() -> TestHost {
        TestHost::new("weather")
            .with_service("geolocation", fake_geolocation)
            .with_service("http-client", |_, _| {
                panic!("offline mode must not call http-client")
            })
    }

    fn api_reply(temperature: f64, conditions: &str) -> Value {
        json!({
            "status": 200,
            "body": json!({"temperature": temperature, "conditions": conditions}).to_string(),
        })
    }

    #[test]
    fn manifest_declares_dependencies_and_permissions() {
        let manifest = plugin().manifest();
        let valid = manifest.validate().unwrap();
        assert!(plugin().problems().is_empty());
        let deps: Vec<String> = valid.dependencies.iter().map(ToString::to_string).collect();
        assert_eq!(deps, ["http-client@^1.0", "geolocation@^1.0"]);
        for permission in [
            "service:http-client",
            "service:geolocation",
            "event:emit:weather:*",
        ] {
            assert!(
                manifest.permissions.iter().any(|p| p == permission),
                "{permission}"
            );
        }
        let action = &manifest.actions[0];
        assert_eq!((action.name.as_str(), action.priority), ("GET_WEATHER", 10));
        assert_eq!(action.timeout_ms, Some(10_000));
        assert_eq!(action.examples[0].input, "What's the weather in London?");
        assert_eq!(action.examples[1].input, "Is it raining in Tokyo?");
        let cache = manifest.providers[0].cache.unwrap();
        assert_eq!(cache.ttl_ms, 600_000);
        assert!(cache.stale_while_revalidate);
    }

    #[test]
    fn validate_matches_weather_words_only() {
        let host = offline_host();
        let loaded = host.load(plugin()).unwrap();
        for text in [
            "What's the weather in London?",
            "Is it raining in Tokyo?",
            "any SNOW today",
            "Forecast please",
            "what temperature is it",
        ] {
            assert!(loaded.validate("GET_WEATHER", text).unwrap(), "{text}");
        }
        for text in ["hello", "book a table in Paris", ""] {
            assert!(!loaded.validate("GET_WEATHER", text).unwrap(), "{text}");
        }
    }

    #[test]
    fn on_load_logs_and_on_start_sets_the_hourly_timer() {
        let host = offline_host();
        let _loaded = host.load(plugin()).unwrap();
        assert!(host
            .logs()
            .contains(&(Level::Info, "weather plugin loaded".to_string())));
        let timers = host.timers();
        assert_eq!(timers.len(), 1);
        assert_eq!((timers[0].1, timers[0].2), (3_600_000, 3_600_000));
        host.fire_timers().unwrap();
    }

    #[test]
    fn stopping_the_service_cancels_the_timer() {
        let host = offline_host();
        let loaded = host.load(plugin()).unwrap();
        loaded.unload().unwrap();
        assert!(host.timers().is_empty());
    }

    #[test]
    fn offline_action_reports_an_estimate() {
        let host = offline_host();
        let loaded = host.load(plugin()).unwrap();
        let day_before = today();
        let result = loaded
            .handle("GET_WEATHER", "What's the weather in London?")
            .unwrap();
        let weather: Weather = serde_json::from_value(result.data.clone()).unwrap();
        assert_eq!(weather.location, "London");
        assert_eq!(weather.source, "offline-estimate");
        assert_eq!(weather.units, Units::Metric);
        let expected: Vec<f64> = [day_before, today()]
            .iter()
            .map(|&day| offline_estimate_celsius(51.5074, day))
            .collect();
        assert!(expected.contains(&weather.temperature), "{weather:?}");
        assert!(result.text.contains("London"), "{}", result.text);
        assert!(result.text.contains("estimate"), "{}", result.text);
        assert!(result.text.contains("°C"), "{}", result.text);
        assert_eq!(result.metadata["source"], "offline-estimate");

        let emitted = host.emitted();
        assert_eq!(emitted.len(), 1);
        assert_eq!(emitted[0].name, "weather:reported");
        assert_eq!(emitted[0].payload, result.data);
    }

    #[test]
    fn online_action_uses_the_api_through_http_client() {
        let calls = Arc::new(AtomicUsize::new(0));
        let urls = Arc::new(Mutex::new(Vec::new()));
        let host = TestHost::new("weather")
            .with_config(json!({"base_url": "http://weather.test/v1/"}))
            .with_service("geolocation", fake_geolocation)
            .with_service(
                "http-client",
                fake_http(&calls, &urls, api_reply(14.2, "cloudy")),
            );
        let loaded = host.load(plugin()).unwrap();
        let result = loaded
            .handle("GET_WEATHER", "What's the weather in London?")
            .unwrap();
        assert_eq!(result.text, "It is 14.2°C and cloudy in London.");
        assert_eq!(result.data["source"], "api");
        assert_eq!(result.data["temperature"], 14.2);
        assert_eq!(
            urls.lock().unwrap().as_slice(),
            ["http://weather.test/v1/current?lat=51.5074&lon=-0.1278&units=metric"]
        );
        assert_eq!(host.emitted()[0].payload["conditions"], "cloudy");
    }

    #[test]
    fn reports_are_cached_per_location() {
        let calls = Arc::new(AtomicUsize::new(0));
        let urls = Arc::new(Mutex::new(Vec::new()));
        let host = TestHost::new("weather")
            .with_config(json!({"base_url": "http://weather.test"}))
            .with_service("geolocation", fake_geolocation)
            .with_service(
                "http-client",
                fake_http(&calls, &urls, api_reply(20.0, "sunny")),
            );
        let loaded = host.load(plugin()).unwrap();
        loaded.handle("GET_WEATHER", "weather in London").unwrap();
        loaded
            .handle("GET_WEATHER", "is it raining in london?")
            .unwrap();
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "second London call is cached"
        );
        loaded
            .handle("GET_WEATHER", "is it raining in Tokyo?")
            .unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 2, "Tokyo is another location");
        // The hourly cleanup keeps entries that have not expired.
        host.fire_timers().unwrap();
        loaded.handle("GET_WEATHER", "weather in London").unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn cache_minutes_zero_disables_the_cache() {
        let calls = Arc::new(AtomicUsize::new(0));
        let urls = Arc::new(Mutex::new(Vec::new()));
        let host = TestHost::new("weather")
            .with_config(json!({"base_url": "http://weather.test", "cache_minutes": 0}))
            .with_service("geolocation", fake_geolocation)
            .with_service(
                "http-client",
                fake_http(&calls, &urls, api_reply(20.0, "sunny")),
            );
        let loaded = host.load(plugin()).unwrap();
        loaded.handle("GET_WEATHER", "weather in London").unwrap();
        loaded.handle("GET_WEATHER", "weather in London").unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn purge_drops_only_expired_entries() {
        let cache = Mutex::new(HashMap::new());
        let now = Instant::now();
        let weather = offline_report(
            &WeatherRequest {
                location: "X".into(),
                lat: 0.0,
                lon: 0.0,
            },
            Units::Metric,
            1,
        );
        for (key, expires) in [("old", now), ("new", now + Duration::from_secs(60))] {
            lock(&cache).insert(
                key.to_string(),
                Cached {
                    weather: weather.clone(),
                    expires,
                },
            );
        }
        assert_eq!(purge_expired(&cache, now), 1);
        assert!(lock(&cache).contains_key("new"));
        assert_eq!(purge_expired(&cache, now + Duration::from_secs(61)), 1);
        assert!(lock(&cache).is_empty());
    }

    #[test]
    fn falls_back_to_the_home_city() {
        let host = offline_host();
        let loaded = host.load(plugin()).unwrap();
        let result = loaded.handle("GET_WEATHER", "will it snow?").unwrap();
        assert_eq!(result.data["location"], "Paris");
        assert_eq!(result.metadata["country"], "France");
    }

    #[test]
    fn imperial_units_are_passed_and_converted() {
        let calls = Arc::new(AtomicUsize::new(0));
        let urls = Arc::new(Mutex::new(Vec::new()));
        let host = TestHost::new("weather")
            .with_config(json!({"base_url": "http://weather.test", "units": "imperial"}))
            .with_service("geolocation", fake_geolocation)
            .with_service(
                "http-client",
                fake_http(&calls, &urls, api_reply(57.6, "foggy")),
            );
        let loaded = host.load(plugin()).unwrap();
        let result = loaded.handle("GET_WEATHER", "weather in Tokyo").unwrap();
        assert_eq!(result.text, "It is 57.6°F and foggy in Tokyo.");
        assert!(urls.lock().unwrap()[0].ends_with("&units=imperial"));

        let request = WeatherRequest {
            location: "Equator".into(),
            lat: 0.0,
            lon: 0.0,
        };
        let metric = offline_report(&request, Units::Metric, 100);
        let imperial = offline_report(&request, Units::Imperial, 100);
        assert!((imperial.temperature - (metric.temperature * 1.8 + 32.0)).abs() < 0.11);
        assert!(imperial.describe().contains("°F"));
    }

    #[test]
    fn api_failures_are_errors() {
        for (reply, needle) in [
            (
                json!({"status": 503, "body": "down for maintenance"}),
                "HTTP 503",
            ),
            (json!({"status": 200, "body": "<html>"}), "unexpected JSON"),
            (
                json!({"status": 200, "body": "{\"temp\": 3}"}),
                "unexpected JSON",
            ),
        ] {
            let calls = Arc::new(AtomicUsize::new(0));
            let urls = Arc::new(Mutex::new(Vec::new()));
            let host = TestHost::new("weather")
                .with_config(json!({"base_url": "http://weather.test"}))
                .with_service("geolocation", fake_geolocation)
                .with_service("http-client", fake_http(&calls, &urls, reply));
            let loaded = host.load(plugin()).unwrap();
            let error = loaded
                .handle("GET_WEATHER", "weather in London")
                .unwrap_err();
            assert!(error.message().contains(needle), "{error:?}");
            assert!(host.emitted().is_empty());
        }

        let host = TestHost::new("weather")
            .with_config(json!({"base_url": "http://weather.test"}))
            .with_service("geolocation", fake_geolocation)
            .with_service("http-client", |_, _| {
                Err(Error::new(ErrorKind::Unavailable, "connection refused"))
            });
        let loaded = host.load(plugin()).unwrap();
        let error = loaded
            .handle("GET_WEATHER", "weather in London")
            .unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Unavailable);
        assert!(error.message().contains("connection refused"), "{error:?}");
    }

    #[test]
    fn service_checks_its_arguments() {
        let host = offline_host();
        let loaded = host.load(plugin()).unwrap();
        for args in [
            json!({"location": "X", "lat": 91.0, "lon": 0.0}),
            json!({"location": "X", "lat": 0.0, "lon": -181.0}),
            json!({"location": " ", "lat": 0.0, "lon": 0.0}),
            json!({"location": "X", "lat": "north"}),
            json!(null),
        ] {
            let error = loaded
                .call_service("weather", "get_weather", args.clone())
                .unwrap_err();
            assert_eq!(error.kind(), ErrorKind::InvalidInput, "{args}: {error:?}");
        }
        let weather = loaded
            .call_service(
                "weather",
                "get_weather",
                json!({"location": "Nowhere", "lat": -45.0, "lon": 170.0}),
            )
            .unwrap();
        assert_eq!(weather["location"], "Nowhere");
    }

    #[test]
    fn bad_config_is_reported() {
        for (config, key) in [
            (json!({"units": "kelvin"}), "units"),
            (json!({"cache_minutes": -1}), "cache_minutes"),
            (json!({"base_url": 7}), "base_url"),
        ] {
            let host = offline_host().with_config(config);
            let error = host.load(plugin()).err().unwrap();
            assert_eq!(error.kind(), ErrorKind::InvalidInput);
            assert!(error.message().contains(key), "{error:?}");
        }
    }

    #[test]
    fn provider_reports_the_home_city() {
        let host = offline_host();
        let loaded = host.load(plugin()).unwrap();
        let value = loaded.provide("weather-context", "anything").unwrap();
        assert_eq!(value["location"], "Paris");
        assert_eq!(value["source"], "offline-estimate");
    }

    #[test]
    fn geolocation_errors_propagate() {
        let host = TestHost::new("weather").with_service("geolocation", |_, _| {
            Err(Error::new(
                ErrorKind::NotFound,
                "unknown home city 'Atlantis'",
            ))
        });
        let loaded = host.load(plugin()).unwrap();
        let error = loaded.handle("GET_WEATHER", "weather?").unwrap_err();
        assert!(error.message().contains("Atlantis"), "{error:?}");
    }

    #[test]
    fn day_of_year_follows_the_calendar() {
        assert_eq!(day_of_year(0), 1); // 1970-01-01
        assert_eq!(day_of_year(31), 32); // 1970-02-01
        assert_eq!(day_of_year(59), 60); // 1970-03-01
        assert_eq!(day_of_year(364), 365); // 1970-12-31
        assert_eq!(day_of_year(11_016), 60); // 2000-02-29
        assert_eq!(day_of_year(11_017), 61); // 2000-03-01
        assert_eq!(day_of_year(19_723), 1); // 2024-01-01
        assert_eq!(day_of_year(20_088), 366); // 2024-12-31
        assert_eq!(day_of_year(-1), 365); // 1969-12-31
    }

    #[test]
    fn the_estimate_is_plausible_and_deterministic() {
        // Warm equator, hemispheres in opposite seasons, cold poles.
        let equator = offline_estimate_celsius(0.0, 200);
        assert!((26.0..=29.0).contains(&equator), "{equator}");
        let london_july = offline_estimate_celsius(51.5, 200);
        let london_january = offline_estimate_celsius(51.5, 15);
        assert!(london_july > 15.0 && london_january < 5.0);
        let sydney_january = offline_estimate_celsius(-33.9, 15);
        let sydney_july = offline_estimate_celsius(-33.9, 200);
        assert!(sydney_january > sydney_july);
        assert!(offline_estimate_celsius(89.0, 15) < -30.0);
        assert_eq!(
            offline_estimate_celsius(40.7, 123),
            offline_estimate_celsius(40.7, 123)
        );
    }
}
