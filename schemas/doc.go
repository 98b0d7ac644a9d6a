// Package schemas is the event contract of jetqa: every fact that travels
// between stages is one of the events defined here, JSON on the wire, with
// a fixed, versioned kind string. It imports only the standard library.
package schemas
