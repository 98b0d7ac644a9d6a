package schemas

// UserSet says User signs in to the web UI with a password whose bcrypt
// hash is PasswordHash, from now on: a new user, or a new password or
// role for one. The hash is kept in the server-only stream JETQA_APIKEYS,
// beside the API keys' secrets.
type UserSet struct {
	User         string `json:"user"`
	PasswordHash string `json:"password_hash"`
	// Admin may act on every job, as an admin's API key may.
	Admin bool `json:"admin,omitempty"`
}

func (UserSet) Kind() string { return "user.set.v1" }

// UserRemoved ends a user: their password no longer signs them in.
type UserRemoved struct {
	User string `json:"user"`
}

func (UserRemoved) Kind() string { return "user.removed.v1" }

// SessionSecretCreated holds the key every API process of one
// installation signs the web UI's session cookies with, so a cookie one
// process made is good at all of them. It is created once.
type SessionSecretCreated struct {
	Secret []byte `json:"secret"`
}

func (SessionSecretCreated) Kind() string { return "session_secret.created.v1" }
