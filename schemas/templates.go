package schemas

// TemplatesLoaded replaces the job templates the server schedules
// products with (POST /api/v1/isos): the YAML and JSON files of one commit
// of a templates repository, by path. The files are kept as they are, so
// a load can be read back exactly; the API parses them.
type TemplatesLoaded struct {
	URL    string            `json:"url"`
	Ref    string            `json:"ref,omitempty"`
	Commit string            `json:"commit"`
	Files  map[string]string `json:"files"`
	By     string            `json:"by,omitempty"`
}

func (TemplatesLoaded) Kind() string { return "templates.loaded.v1" }
