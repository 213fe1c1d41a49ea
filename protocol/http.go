package protocol

import (
	"encoding/json"
	"net/http"
)

// HTTPError is the JSON body of an HTTP refusal (an upgrade refused before it happened, or an
// API call): {"error":{"code","message"}}, code being one of the error codes above.
type HTTPError struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// WriteHTTPError answers with status and the HTTPError body, as application/json.
func WriteHTTPError(w http.ResponseWriter, status int, code, msg string) {
	var body HTTPError
	body.Error.Code, body.Error.Message = code, msg
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(body)
}
