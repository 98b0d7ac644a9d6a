package match

import (
	"container/list"
	"sync"

	"jetqa/stages/match/needle"
)

// needleCache keeps prepared needles by content hash, the most recently
// used first, within a bound on their pixels' memory. A needle in use by
// a search is closed only once the search is done with it.
type needleCache struct {
	mu    sync.Mutex
	limit int64
	size  int64
	lru   list.List // of *cachedNeedle, most recently used at the front
	byKey map[string]*list.Element
}

type cachedNeedle struct {
	hash    string
	n       *needle.Needle
	bytes   int64
	users   int
	evicted bool
}

func newNeedleCache(limit int64) *needleCache {
	return &needleCache{limit: limit, byKey: map[string]*list.Element{}}
}

// get returns the needle of hash, in use until released.
func (c *needleCache) get(hash string) (*cachedNeedle, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.byKey[hash]
	if !ok {
		return nil, false
	}
	c.lru.MoveToFront(e)
	cn := e.Value.(*cachedNeedle)
	cn.users++
	return cn, true
}

// add keeps a needle just prepared, and evicts the least recently used
// ones beyond the limit.
func (c *needleCache) add(hash string, n *needle.Needle) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.byKey[hash]; ok {
		n.Close()
		return
	}
	cn := &cachedNeedle{hash: hash, n: n, bytes: n.Bytes()}
	c.byKey[hash] = c.lru.PushFront(cn)
	c.size += cn.bytes
	for c.size > c.limit && c.lru.Len() > 1 {
		c.evict(c.lru.Back())
	}
}

func (c *needleCache) evict(e *list.Element) {
	cn := c.lru.Remove(e).(*cachedNeedle)
	delete(c.byKey, cn.hash)
	c.size -= cn.bytes
	cn.evicted = true
	if cn.users == 0 {
		cn.n.Close()
	}
}

// release ends a use of the needles.
func (c *needleCache) release(used []*cachedNeedle) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, cn := range used {
		cn.users--
		if cn.users == 0 && cn.evicted {
			cn.n.Close()
		}
	}
}

// close closes every needle; none may be in use.
func (c *needleCache) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for c.lru.Len() > 0 {
		c.evict(c.lru.Back())
	}
}

// stats are how many needles the cache keeps and their pixels' bytes.
func (c *needleCache) stats() (int, int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lru.Len(), c.size
}
