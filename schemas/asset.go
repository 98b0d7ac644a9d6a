package schemas

// AssetRegistered says an asset (ISO, disk image, kernel, …) is stored on
// the server under a name that jobs can use in ISO=, HDD_1=, KERNEL=, ….
// Registering the same name again replaces it for later jobs.
type AssetRegistered struct {
	Name   string `json:"name"`
	SHA256 string `json:"sha256"`
	Size   int64  `json:"size"`
	// Source is where the bytes came from: a file name or a URL.
	Source string `json:"source,omitempty"`
}

func (AssetRegistered) Kind() string { return "asset.registered.v1" }

// AssetProgress reports how far a worker host got fetching a job's asset.
// It is sent a few times a second while bytes flow, and once at the end.
type AssetProgress struct {
	Worker  WorkerRef `json:"worker"`
	Job     int64     `json:"job"`
	Setting string    `json:"setting"`
	Source  string    `json:"source"`
	Done    int64     `json:"done"`
	Total   int64     `json:"total"` // -1 when unknown
}

func (e AssetProgress) Target() WorkerRef { return e.Worker }

func (AssetProgress) Kind() string { return "asset.progress.v1" }
