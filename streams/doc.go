// Package streams is the only package that knows JetStream: the embedded
// server, the connection, the streams, consumers, key-value and object
// store buckets, their subject and durable names (the contract between
// stages: changing one is a migration), and helpers to append, consume and
// replay events.
package streams
