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
