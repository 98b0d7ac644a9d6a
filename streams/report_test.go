package streams

import (
	"testing"

	"jetqa/schemas"
)

// An event whose content names another worker than its subject does is
// not taken: credentials bind the subject to the sender, the check binds
// the content to the subject.
func TestEventsMustBeOnTheirOwnSubject(t *testing.T) {
	h1, h2 := schemas.WorkerRef{Host: "h1", Instance: 1}, schemas.WorkerRef{Host: "h2", Instance: 1}
	cases := []struct {
		subject string
		job     int64
		p       schemas.Payload
		ok      bool
	}{
		{"jetqa.worker.h1.1.heartbeat", 0, &schemas.WorkerHeartbeat{Worker: h1}, true},
		{"jetqa.worker.h1.1.heartbeat", 0, &schemas.WorkerHeartbeat{Worker: h2}, false},
		{"jetqa.worker.h1.1.registered", 0, &schemas.WorkerHeartbeat{Worker: h1}, false},
		{"jetqa.job.7.ready.h1.1", 7, &schemas.JobReady{Worker: h1}, true},
		{"jetqa.job.7.ready.h1.1", 8, &schemas.JobReady{Worker: h1}, false},
		{"jetqa.job.7.ready.h1.1", 7, &schemas.JobReady{Worker: h2}, false},
		{"jetqa.match.request.h1.1", 7, &schemas.MatchRequested{ReplyTo: h1}, true},
		{"jetqa.match.request.h1.1", 7, &schemas.MatchRequested{ReplyTo: h2}, false},
		{"jetqa.match.resolved.h1.1", 7, &schemas.MatchResolved{}, true},
		{"jetqa.user.alice", 0, &schemas.UserSet{User: "alice"}, true},
		{"jetqa.user.alice", 0, &schemas.UserSet{User: "bob"}, false},
		{"jetqa.user.a_b", 0, &schemas.UserRemoved{User: "a.b"}, true},
		{"jetqa.uisecret", 0, &schemas.SessionSecretCreated{}, true},
		{"jetqa.user.alice", 0, &schemas.SessionSecretCreated{}, false},
	}
	for _, c := range cases {
		ev, err := schemas.NewEvent(c.job, "test", c.p)
		if err != nil {
			t.Fatal(err)
		}
		if err := onItsSubject(c.subject, ev, c.p); (err == nil) != c.ok {
			t.Errorf("%s on %s (job %d, %+v): %v, want ok %v", ev.Kind, c.subject, c.job, c.p, err, c.ok)
		}
	}
}
