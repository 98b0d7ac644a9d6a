package schemas

import (
	"fmt"
	"time"
)

// APIKeyCreated says a user may sign API requests with Key and Secret, as
// openQA's API keys: until Expires, if set. The secret is kept in the
// server-only stream JETQA_APIKEYS: signatures are HMACs, so the server
// needs it in clear, as openQA keeps it in its database.
type APIKeyCreated struct {
	Key     string     `json:"key"`
	Secret  string     `json:"secret"`
	User    string     `json:"user"`
	Expires *time.Time `json:"expires,omitempty"`
	// Scope is what the key may do; empty is ScopeOperator, or ScopeAdmin
	// where Admin is set (the keys of before scopes).
	Scope KeyScope `json:"scope,omitempty"`
	// Admin is ScopeAdmin, as keys were made before scopes.
	Admin bool `json:"admin,omitempty"`
}

// Grants is the key's scope, with the defaults of keys made before scopes.
func (k APIKeyCreated) Grants() KeyScope {
	switch {
	case k.Admin:
		return ScopeAdmin
	case k.Scope == "":
		return ScopeOperator
	}
	return k.Scope
}

// KeyScope is what an API key may change; reading is public. Each scope
// may do what the one before may.
type KeyScope string

const (
	// ScopeOwn posts jobs, and cancels, restarts, deletes and uses
	// developer mode on its user's own jobs only: a key for a CI pipeline.
	ScopeOwn KeyScope = "own"
	// ScopeOperator acts on every job, as openQA's operators: cancel,
	// restart, delete; developer mode on its user's jobs.
	ScopeOperator KeyScope = "operator"
	// ScopeAdmin also uses developer mode on every job.
	ScopeAdmin KeyScope = "admin"
)

// KeyScopes are the scopes, least first.
var KeyScopes = []KeyScope{ScopeOwn, ScopeOperator, ScopeAdmin}

// ParseKeyScope reads a scope's name.
func ParseKeyScope(s string) (KeyScope, error) {
	for _, k := range KeyScopes {
		if string(k) == s {
			return k, nil
		}
	}
	return "", fmt.Errorf("API key scope %q: use own (its user's jobs only), operator (every job) or admin", s)
}

// Reaches says whether a key of scope k may do what one of scope want may.
func (k KeyScope) Reaches(want KeyScope) bool {
	rank := func(s KeyScope) int {
		for i, v := range KeyScopes {
			if v == s {
				return i
			}
		}
		return -1
	}
	return rank(k) >= rank(want) && rank(want) >= 0
}

func (APIKeyCreated) Kind() string { return "apikey.created.v1" }

// APIKeyRevoked ends a key: requests signed with it are refused from now.
type APIKeyRevoked struct {
	Key string `json:"key"`
}

func (APIKeyRevoked) Kind() string { return "apikey.revoked.v1" }
