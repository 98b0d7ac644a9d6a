package needle

import (
	"bytes"
	"compress/zlib"
	"encoding/binary"
	"hash/crc32"
	"image"
	"image/color"
	"math/rand/v2"
	"slices"
	"testing"

	"gocv.io/x/gocv"
)

// opencvGrey is tinycv's reading of a PNG: imread(IMREAD_COLOR), then
// cvtColor(BGR2GRAY). ok is false when OpenCV does not decode data.
func opencvGrey(tb testing.TB, data []byte) (pix []byte, cols int, ok bool) {
	tb.Helper()
	colour, err := gocv.IMDecode(data, gocv.IMReadColor)
	if err != nil || colour.Empty() {
		colour.Close()
		return nil, 0, false
	}
	defer colour.Close()
	grey := gocv.NewMat()
	defer grey.Close()
	gocv.CvtColor(colour, &grey, gocv.ColorBGRToGray)
	pix, err = grey.DataPtrUint8()
	if err != nil {
		tb.Fatal(err)
	}
	return bytes.Clone(pix), grey.Cols(), true
}

// chunkPNG writes a PNG from its chunks, with their CRCs.
func chunkPNG(chunks ...[2][]byte) []byte {
	out := []byte("\x89PNG\r\n\x1a\n")
	for _, c := range chunks {
		out = binary.BigEndian.AppendUint32(out, uint32(len(c[1])))
		start := len(out)
		out = append(out, c[0]...)
		out = append(out, c[1]...)
		out = binary.BigEndian.AppendUint32(out, crc32.ChecksumIEEE(out[start:]))
	}
	return out
}

func chunk(typ string, data []byte) [2][]byte { return [2][]byte{[]byte(typ), data} }

// filteredPNG encodes random 8-bit pixels of colour type 2 (RGB) or 6
// (RGBA) with row y filtered by filter y%5, the image data split into
// IDAT chunks of idatSize bytes, and extra chunks after IHDR.
func filteredPNG(w, h int, colourType byte, seed uint64, idatSize int, extra ...[2][]byte) []byte {
	bpp := 3
	if colourType == 6 {
		bpp = 4
	}
	rng := rand.New(rand.NewPCG(seed, 2))
	pix := make([]byte, w*h*bpp)
	for i := range pix {
		pix[i] = byte(rng.IntN(256))
		if i%97 < 60 && i >= bpp { // runs, as on screens
			pix[i] = pix[i-bpp]
		}
	}
	stride := w * bpp
	var raw []byte
	for y := range h {
		f := byte(y % 5)
		raw = append(raw, f)
		row := pix[y*stride : (y+1)*stride]
		for x := range stride {
			var a, b, c int
			if x >= bpp {
				a = int(row[x-bpp])
			}
			if y > 0 {
				b = int(pix[(y-1)*stride+x])
				if x >= bpp {
					c = int(pix[(y-1)*stride+x-bpp])
				}
			}
			pred := 0
			switch f {
			case 1:
				pred = a
			case 2:
				pred = b
			case 3:
				pred = (a + b) / 2
			case 4:
				p := a + b - c
				pa, pb, pc := abs(p-a), abs(p-b), abs(p-c)
				switch {
				case pa <= pb && pa <= pc:
					pred = a
				case pb <= pc:
					pred = b
				default:
					pred = c
				}
			}
			raw = append(raw, row[x]-byte(pred))
		}
	}
	var z bytes.Buffer
	zw := zlib.NewWriter(&z)
	zw.Write(raw)
	zw.Close()

	ihdr := binary.BigEndian.AppendUint32(nil, uint32(w))
	ihdr = binary.BigEndian.AppendUint32(ihdr, uint32(h))
	ihdr = append(ihdr, 8, colourType, 0, 0, 0)
	chunks := append([][2][]byte{chunk("IHDR", ihdr)}, extra...)
	for zd := z.Bytes(); len(zd) > 0; {
		n := min(idatSize, len(zd))
		chunks = append(chunks, chunk("IDAT", zd[:n]))
		zd = zd[n:]
	}
	return chunkPNG(append(chunks, chunk("IEND", nil))...)
}

func abs(x int) int { return max(x, -x) }

// decodeGrey gives OpenCV's grey values, decoding the common PNGs itself
// and leaving the others, and anything malformed, to OpenCV.
func TestDecodeGreyMatchesOpenCV(t *testing.T) {
	screen := screenWithDialogs(amber, at300)
	translucent := image.NewNRGBA(image.Rect(0, 0, 37, 23))
	for i := range translucent.Pix {
		translucent.Pix[i] = byte(i * 7)
	}
	rgb := filteredPNG(61, 40, 2, 1, 1<<20)
	truncated := bytes.Clone(rgb[:len(rgb)-30])
	badCRC := bytes.Clone(rgb)
	badCRC[40]++
	trailing := append(bytes.Clone(rgb), 0, 0, 0, 0)
	palette := color.Palette{grey40, amber, grey200}
	paletted := image.NewPaletted(image.Rect(0, 0, 9, 9), palette)
	for i := range paletted.Pix {
		paletted.Pix[i] = byte(i % 3)
	}
	gray16 := image.NewGray16(image.Rect(0, 0, 9, 9))
	for i := range gray16.Pix {
		gray16.Pix[i] = byte(i * 13)
	}

	tests := []struct {
		name string
		png  []byte
		fast bool // decoded here, not by OpenCV
	}{
		{"RGB screen from Go's encoder", pngOf(t, screen), true},
		{"RGB, every filter", rgb, true},
		{"RGBA, every filter", filteredPNG(61, 40, 6, 2, 1<<20), true},
		{"RGBA, translucent", pngOf(t, translucent), true},
		{"RGB in IDAT chunks of 100 bytes", filteredPNG(300, 50, 2, 3, 100), true},
		{"RGB in IDAT chunks of 1 byte", filteredPNG(20, 10, 2, 4, 1), true},
		{"a text chunk", filteredPNG(20, 10, 2, 5, 1<<20, chunk("tEXt", []byte("Software\x00jetqa"))), false},
		{"gamma", filteredPNG(20, 10, 2, 6, 1<<20, chunk("gAMA", []byte{0, 0, 0x3a, 0x98})), false},
		{"paletted", pngOf(t, paletted), false},
		{"16-bit grey", pngOf(t, gray16), false},
		{"grey", pngOf(t, image.NewGray(image.Rect(0, 0, 5, 5))), false},
		{"truncated", truncated, false},
		{"bad CRC", badCRC, false},
		{"bytes after IEND", trailing, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fast, ok := decodeGreyFast(tt.png)
			if ok {
				fast.Close()
			}
			if ok != tt.fast {
				t.Errorf("decoded without OpenCV: %v, want %v", ok, tt.fast)
			}
			want, cols, wantOK := opencvGrey(t, tt.png)
			got, err := decodeGrey(tt.png)
			if err != nil {
				if wantOK {
					t.Fatalf("decodeGrey: %v; OpenCV decodes it", err)
				}
				return
			}
			defer got.Close()
			if !wantOK {
				t.Fatal("decodeGrey decodes what OpenCV refuses")
			}
			pix, _ := got.DataPtrUint8()
			if got.Cols() != cols || !slices.Equal(pix, want) {
				t.Errorf("grey values differ from OpenCV's")
			}
		})
	}
}

// The grey conversion is OpenCV's for every one of the 2^24 colours.
func TestDecodeGreyEveryColour(t *testing.T) {
	if testing.Short() {
		t.Skip("16M pixels")
	}
	img := image.NewRGBA(image.Rect(0, 0, 4096, 4096))
	for i := range 1 << 24 {
		img.Pix[4*i], img.Pix[4*i+1], img.Pix[4*i+2], img.Pix[4*i+3] = byte(i>>16), byte(i>>8), byte(i), 255
	}
	data := pngOf(t, img)
	fast, ok := decodeGreyFast(data)
	if !ok {
		t.Fatal("not decoded without OpenCV")
	}
	defer fast.Close()
	want, _, _ := opencvGrey(t, data)
	got, _ := fast.DataPtrUint8()
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("colour %06x: grey %d, OpenCV %d", i, got[i], want[i])
		}
	}
}

// Whatever decodeGrey decodes itself, OpenCV decodes the same.
func FuzzDecodeGrey(f *testing.F) {
	f.Add(filteredPNG(7, 5, 2, 1, 1<<20))
	f.Add(filteredPNG(7, 5, 6, 2, 10))
	f.Add(pngOf(f, screenWithDialogs(grey200, at300)))
	f.Fuzz(func(t *testing.T, data []byte) {
		fast, ok := decodeGreyFast(data)
		if !ok {
			return
		}
		defer fast.Close()
		want, cols, wantOK := opencvGrey(t, data)
		got, _ := fast.DataPtrUint8()
		if !wantOK || fast.Cols() != cols || !slices.Equal(got, want) {
			t.Fatalf("decoded %dx%d, OpenCV decodes: %v", fast.Cols(), fast.Rows(), wantOK)
		}
	})
}
