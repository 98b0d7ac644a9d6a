package schemas

import "time"

// APIKeyCreated says a user may sign API requests with Key and Secret, as
// openQA's API keys: until Expires, if set. The secret is kept in the
// server-only stream JETQA_APIKEYS: signatures are HMACs, so the server
// needs it in clear, as openQA keeps it in its database.
type APIKeyCreated struct {
	Key     string     `json:"key"`
	Secret  string     `json:"secret"`
	User    string     `json:"user"`
	Expires *time.Time `json:"expires,omitempty"`
	// Admin may act on every job (developer mode on others' jobs); other
	// users on their own.
	Admin bool `json:"admin,omitempty"`
}

func (APIKeyCreated) Kind() string { return "apikey.created.v1" }

// APIKeyRevoked ends a key: requests signed with it are refused from now.
type APIKeyRevoked struct {
	Key string `json:"key"`
}

func (APIKeyRevoked) Kind() string { return "apikey.revoked.v1" }
