package api

import (
	"cmp"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"jetqa/schemas"
	"jetqa/streams"
)

// Signing in to the web UI: local users (`jetqa admin user add`), kept
// current from their events. A signed-in browser holds a session cookie
// signed with the installation's session secret (shared by every API
// process through the stream), so any API process accepts it. Every form
// carries a CSRF token bound to a random cookie of the browser; a POST
// without the matching token, or from another origin, changes nothing.
// Reading pages is public, as in openQA.

const (
	sessionCookie = "jetqa_session"
	csrfCookie    = "jetqa_csrf"
	csrfField     = "csrf"
	// sessionTime is how long a sign-in lasts.
	sessionTime = 7 * 24 * time.Hour
)

// uiUsers are the local users and the secret that signs sessions.
type uiUsers struct {
	mu     sync.RWMutex
	users  map[string]streams.User
	secret []byte
}

func (u *uiUsers) set(user streams.User) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if user.Removed {
		delete(u.users, user.Name)
		return
	}
	u.users[user.Name] = user
}

func (u *uiUsers) get(name string) (streams.User, bool) {
	u.mu.RLock()
	defer u.mu.RUnlock()
	user, ok := u.users[name]
	return user, ok
}

func (u *uiUsers) mac(parts ...string) string {
	m := hmac.New(sha256.New, u.secret)
	m.Write([]byte(strings.Join(parts, "\n")))
	return hex.EncodeToString(m.Sum(nil))
}

// followUsers loads the session secret, keeps the users current, and
// closes ready once those stored before the start are known.
func (s *Server) followUsers(ctx context.Context, ready chan struct{}) error {
	secret, err := s.bus.SessionSecret(ctx)
	if err != nil {
		return fmt.Errorf("session secret: %w", err)
	}
	s.users.secret = secret
	last, err := s.bus.LastUserSequence(ctx)
	if err != nil {
		return fmt.Errorf("users: %w", err)
	}
	markReady := sync.OnceFunc(func() { close(ready) })
	if last == 0 {
		markReady()
	}
	err = s.bus.FollowUsers(ctx, func(u streams.User, seq uint64) {
		s.users.set(u)
		if seq >= last {
			markReady()
		}
	})
	if err != nil && ctx.Err() == nil {
		return fmt.Errorf("users: %w", err)
	}
	return nil
}

// viewer is who is looking: the signed-in user, or "".
func (s *Server) viewer(r *http.Request) (streams.User, bool) {
	c, err := r.Cookie(sessionCookie)
	if err != nil {
		return streams.User{}, false
	}
	parts := strings.Split(c.Value, ".")
	if len(parts) != 3 {
		return streams.User{}, false
	}
	name, err := base64.RawURLEncoding.DecodeString(parts[0])
	if err != nil {
		return streams.User{}, false
	}
	expires, err := strconv.ParseInt(parts[1], 10, 64)
	if err != nil || time.Now().Unix() > expires {
		return streams.User{}, false
	}
	if !hmac.Equal([]byte(parts[2]), []byte(s.users.mac("session", string(name), parts[1]))) {
		return streams.User{}, false
	}
	return s.users.get(string(name))
}

// pageFor is the layout's data for the viewer, with a CSRF token for its
// forms (the browser's CSRF cookie is set here when it has none).
func (s *Server) pageFor(w http.ResponseWriter, r *http.Request, title string) page {
	p := page{Title: title}
	if u, ok := s.viewer(r); ok {
		p.User, p.Admin = u.Name, u.Admin
	}
	var nonce string
	if c, err := r.Cookie(csrfCookie); err == nil && len(c.Value) == 32 {
		nonce = c.Value
	} else {
		var b [16]byte
		_, _ = rand.Read(b[:])
		nonce = hex.EncodeToString(b[:])
		http.SetCookie(w, &http.Cookie{Name: csrfCookie, Value: nonce, Path: "/", HttpOnly: true, SameSite: http.SameSiteStrictMode})
	}
	p.CSRF = s.users.mac("csrf", nonce)
	return p
}

// form checks a form's POST: from this site, with the CSRF token of the
// browser's cookie.
func (s *Server) form(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if origin := r.Header.Get("Origin"); origin != "" && origin != "null" {
			if u, err := url.Parse(origin); err != nil || u.Host != r.Host {
				s.uiError(w, r, http.StatusForbidden, "a form sent from %s: only this site's own pages may send forms", origin)
				return
			}
		}
		r.Body = http.MaxBytesReader(w, r.Body, 1<<20)
		if err := r.ParseForm(); err != nil {
			s.uiError(w, r, http.StatusBadRequest, "unreadable form: %v", err)
			return
		}
		c, err := r.Cookie(csrfCookie)
		if err != nil || !hmac.Equal([]byte(r.PostForm.Get(csrfField)), []byte(s.users.mac("csrf", c.Value))) {
			s.uiError(w, r, http.StatusForbidden, "the form's CSRF token is missing or wrong: reload the page and send the form again")
			return
		}
		next(w, r)
	}
}

// signedIn lets only a signed-in user's form through.
func (s *Server) signedIn(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if _, ok := s.viewer(r); !ok {
			s.uiError(w, r, http.StatusForbidden, "sign in first: only signed-in users may do this")
			return
		}
		next(w, r)
	}
}

// signedInPage sends a visitor who is not signed in to the sign-in page.
func (s *Server) signedInPage(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if _, ok := s.viewer(r); !ok {
			http.Redirect(w, r, "/login?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
			return
		}
		next(w, r)
	}
}

// loginPage is the sign-in form.
type loginPage struct {
	page
	Next  string
	Name  string
	Error string
}

func (s *Server) loginPage(w http.ResponseWriter, r *http.Request) {
	p := loginPage{page: s.pageFor(w, r, "Sign in"), Next: localPath(r.URL.Query().Get("next"))}
	s.render(w, http.StatusOK, "login.html", p)
}

// localPath is p when it is a path of this site, else "/tests".
func localPath(p string) string {
	if !strings.HasPrefix(p, "/") || strings.HasPrefix(p, "//") || strings.HasPrefix(p, "/\\") {
		return "/tests"
	}
	return p
}

func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	name, password := strings.TrimSpace(r.PostForm.Get("user")), r.PostForm.Get("password")
	u, ok := s.users.get(name)
	if !ok || !u.CheckPassword(password) {
		s.log.Warn("sign-in refused", "user", name, "from", r.RemoteAddr)
		p := loginPage{page: s.pageFor(w, r, "Sign in"), Next: localPath(r.PostForm.Get("next")), Name: name,
			Error: "unknown user or wrong password"}
		s.render(w, http.StatusForbidden, "login.html", p)
		return
	}
	expires := strconv.FormatInt(time.Now().Add(sessionTime).Unix(), 10)
	value := base64.RawURLEncoding.EncodeToString([]byte(u.Name)) + "." + expires + "." + s.users.mac("session", u.Name, expires)
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: value, Path: "/", HttpOnly: true, SameSite: http.SameSiteLaxMode,
		MaxAge: int(sessionTime.Seconds()), Secure: r.TLS != nil})
	s.log.Info("signed in", "user", u.Name, "from", r.RemoteAddr)
	http.Redirect(w, r, localPath(r.PostForm.Get("next")), http.StatusSeeOther)
}

func (s *Server) logout(w http.ResponseWriter, r *http.Request) {
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: "", Path: "/", MaxAge: -1})
	http.Redirect(w, r, "/tests", http.StatusSeeOther)
}

// formJob reads the job of a form's {id}, or writes the error page, with
// the signed-in user as the caller: an admin, or an operator.
func (s *Server) formJob(w http.ResponseWriter, r *http.Request) (*schemas.JobAggregate, caller, bool) {
	u, _ := s.viewer(r)
	by := caller{user: u.Name, scope: schemas.ScopeOperator}
	if u.Admin {
		by.scope = schemas.ScopeAdmin
	}
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || id <= 0 {
		s.uiError(w, r, http.StatusNotFound, "job %q: no such job", r.PathValue("id"))
		return nil, by, false
	}
	agg, err := s.bus.LoadJob(r.Context(), id)
	switch {
	case errors.Is(err, streams.ErrNoJob):
		s.uiError(w, r, http.StatusNotFound, "job %d does not exist", id)
		return nil, by, false
	case err != nil:
		status, err := s.failedStore("read the job", err)
		s.uiError(w, r, status, "%v", err)
		return nil, by, false
	}
	return agg, by, true
}

func (s *Server) cancelForm(w http.ResponseWriter, r *http.Request) {
	agg, by, ok := s.formJob(w, r)
	if !ok {
		return
	}
	if status, err := s.cancel(r.Context(), agg, by); err != nil {
		s.uiError(w, r, status, "%v", err)
		return
	}
	http.Redirect(w, r, fmt.Sprintf("/tests/%d", agg.ID), http.StatusSeeOther)
}

func (s *Server) restartForm(w http.ResponseWriter, r *http.Request) {
	agg, by, ok := s.formJob(w, r)
	if !ok {
		return
	}
	clone, status, err := s.restart(r.Context(), agg, by)
	if err != nil {
		s.uiError(w, r, status, "%v", err)
		return
	}
	http.Redirect(w, r, fmt.Sprintf("/tests/%d", clone), http.StatusSeeOther)
}

// developerForm sends the live view's developer-mode commands: pause,
// resume, keys (names separated by spaces) and text to type.
func (s *Server) developerForm(w http.ResponseWriter, r *http.Request) {
	agg, by, ok := s.formJob(w, r)
	if !ok {
		return
	}
	req := DeveloperRequest{Action: r.PostForm.Get("action"), Text: r.PostForm.Get("text"), Keys: strings.Fields(r.PostForm.Get("keys"))}
	if !slices.Contains(schemas.DevActions, req.Action) || req.Action == schemas.DevRetry {
		s.uiError(w, r, http.StatusBadRequest, "developer action %q: use pause, resume, keys or type", req.Action)
		return
	}
	if _, status, err := s.sendDeveloper(r.Context(), agg, by, req); err != nil {
		s.uiError(w, r, status, "%v", err)
		return
	}
	http.Redirect(w, r, fmt.Sprintf("/tests/%d#live", agg.ID), http.StatusSeeOther)
}

// apiKeysPage lists the user's API keys; a key just made shows its secret
// once.
type apiKeysPage struct {
	page
	Keys []streams.APIKey
	New  *schemas.APIKeyCreated
}

func (s *Server) apiKeysPage(w http.ResponseWriter, r *http.Request) {
	s.renderKeys(w, r, nil)
}

func (s *Server) renderKeys(w http.ResponseWriter, r *http.Request, created *schemas.APIKeyCreated) {
	p := apiKeysPage{page: s.pageFor(w, r, "API keys"), New: created}
	p.Nav = "keys"
	p.Keys = s.keys.of(p.User)
	s.render(w, http.StatusOK, "apikeys.html", p)
}

func (s *Server) createKeyForm(w http.ResponseWriter, r *http.Request) {
	u, _ := s.viewer(r)
	var expires time.Time
	if v := r.PostForm.Get("days"); v != "" {
		days, err := strconv.Atoi(v)
		if err != nil || days < 1 || days > 3650 {
			s.uiError(w, r, http.StatusBadRequest, "expires in %q days: give a number from 1 to 3650, or nothing for a key that does not expire", v)
			return
		}
		expires = time.Now().Add(time.Duration(days) * 24 * time.Hour)
	}
	scope, err := schemas.ParseKeyScope(cmp.Or(r.PostForm.Get("scope"), string(schemas.ScopeOperator)))
	if err != nil {
		s.uiError(w, r, http.StatusBadRequest, "%v", err)
		return
	}
	if scope == schemas.ScopeAdmin && !u.Admin {
		s.uiError(w, r, http.StatusForbidden, "only an admin may make an admin's key")
		return
	}
	k, err := s.bus.CreateAPIKey(r.Context(), u.Name, expires, scope)
	if err != nil {
		status, err := s.failedStore("create the key", err)
		s.uiError(w, r, status, "%v", err)
		return
	}
	// Usable here at once; other API processes learn it from its event.
	s.keys.Set(streams.APIKey{APIKeyCreated: k, Created: time.Now()})
	s.log.Info("API key created", "user", u.Name, "key", k.Key)
	s.renderKeys(w, r, &k)
}

func (s *Server) revokeKeyForm(w http.ResponseWriter, r *http.Request) {
	u, _ := s.viewer(r)
	key := r.PathValue("key")
	if !slices.ContainsFunc(s.keys.of(u.Name), func(k streams.APIKey) bool { return k.Key == key }) && !u.Admin {
		s.uiError(w, r, http.StatusForbidden, "key %s is not yours", key)
		return
	}
	if err := s.bus.RevokeAPIKey(r.Context(), key); err != nil {
		status, err := s.failedStore("revoke the key", err)
		s.uiError(w, r, status, "%v", err)
		return
	}
	s.log.Info("API key revoked", "user", u.Name, "key", key)
	http.Redirect(w, r, "/api_keys", http.StatusSeeOther)
}
