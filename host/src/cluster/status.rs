//! What `GET /v1/cluster` and `agent-host cluster status` show: the hosts
//! of the agent, their lock hash, load and last heartbeat.
