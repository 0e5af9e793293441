//! Thumbnails: a few fixed sizes (Synapse's defaults), made on first ask
//! from the original, stored like any file and kept per size and method.
//! Decoding is bounded (dimensions and memory) so a decompression bomb
//! fails instead of eating the server, and runs on the blocking pool, two
//! at a time.

use std::io::Cursor;

use image::{DynamicImage, ImageFormat, ImageReader, Limits};
use serde::{Deserialize, Serialize};

use super::{MediaRecord, not_found};
use crate::{Error, ErrorCode, Result, Services, tables};

/// `crop` fills the size exactly (cutting the edges); `scale` fits inside it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Crop,
    Scale,
}

impl Method {
    pub fn parse(text: Option<&str>) -> Result<Self> {
        match text {
            None | Some("scale") => Ok(Self::Scale),
            Some("crop") => Ok(Self::Crop),
            Some(other) => Err(Error::invalid_param(format!(
                "Unknown thumbnail method {other:?}."
            ))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Crop => "crop",
            Self::Scale => "scale",
        }
    }
}

/// The sizes made, as Synapse makes them by default.
const SIZES: [(u32, u32, Method); 5] = [
    (32, 32, Method::Crop),
    (96, 96, Method::Crop),
    (320, 240, Method::Scale),
    (640, 480, Method::Scale),
    (800, 600, Method::Scale),
];

/// The largest picture decoded, each way, and the memory a decode may take.
const MAX_SIDE: u32 = 12_000;
const MAX_DECODE_BYTES: u64 = 160 * 1024 * 1024;
/// Types a thumbnail is made of.
const THUMBNAILED: [&str; 4] = ["image/jpeg", "image/png", "image/gif", "image/webp"];

/// A stored thumbnail (table `thumbnails`).
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct ThumbnailRecord {
    pub sha256: String,
    pub content_type: String,
    pub width: u32,
    pub height: u32,
    pub size: u64,
}

/// The key of a thumbnail of a size and method.
pub fn spec(width: u32, height: u32, method: Method, animated: bool) -> String {
    format!(
        "{width}x{height}-{}{}",
        method.name(),
        if animated { "-animated" } else { "" }
    )
}

/// The size made for an ask of `width` x `height`: the smallest of the
/// method at least as large, else the largest of it.
pub fn pick_size(width: u32, height: u32, method: Method) -> (u32, u32, Method) {
    let sizes = SIZES.iter().filter(|(_, _, m)| *m == method);
    sizes
        .clone()
        .filter(|(w, h, _)| *w >= width && *h >= height)
        .min_by_key(|(w, h, _)| w * h)
        .or_else(|| sizes.max_by_key(|(w, h, _)| w * h))
        .copied()
        .unwrap_or(SIZES[0])
}

/// A made thumbnail: its bytes, type and size.
pub struct Rendered {
    pub bytes: Vec<u8>,
    pub content_type: &'static str,
    pub width: u32,
    pub height: u32,
}

/// Frames of an animated thumbnail, at most.
const MAX_FRAMES: usize = 200;

/// An animated GIF's thumbnail, each frame shrunk; `None` when `bytes` is
/// not a GIF of several frames (the still path then makes one).
pub fn render_animated(
    bytes: &[u8],
    width: u32,
    height: u32,
    method: Method,
) -> Option<Result<Rendered>> {
    use image::{AnimationDecoder, Frame, ImageDecoder, codecs::gif};

    let unusable = |e: String| {
        Error::new(ErrorCode::Unknown, format!("Cannot make a thumbnail: {e}.")).with_status(400)
    };
    if image::guess_format(bytes).ok()? != ImageFormat::Gif {
        return None;
    }
    let mut decoder = gif::GifDecoder::new(Cursor::new(bytes)).ok()?;
    let (source_width, source_height) = decoder.dimensions();
    if source_width > MAX_SIDE || source_height > MAX_SIDE {
        return Some(Err(unusable("the picture is too large".into())));
    }
    let mut limits = Limits::default();
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    decoder.set_limits(limits).ok()?;
    // Each decoded frame is the whole canvas: the frames kept are bounded
    // by memory as well as by count.
    let per_frame = u64::from(source_width) * u64::from(source_height) * 4;
    let frame_budget = (MAX_DECODE_BYTES / per_frame.max(1)).clamp(1, MAX_FRAMES as u64) as usize;
    let mut frames = Vec::new();
    for frame in decoder.into_frames().take(frame_budget) {
        let frame = match frame {
            Ok(frame) => frame,
            Err(e) => return Some(Err(unusable(e.to_string()))),
        };
        let delay = frame.delay();
        let picture = DynamicImage::ImageRgba8(frame.into_buffer());
        let small = if picture.width() <= width && picture.height() <= height {
            picture
        } else {
            match method {
                Method::Scale => picture.thumbnail(width, height),
                Method::Crop => {
                    picture.resize_to_fill(width, height, image::imageops::FilterType::Triangle)
                }
            }
        };
        frames.push(Frame::from_parts(small.to_rgba8(), 0, 0, delay));
    }
    if frames.len() < 2 {
        return None;
    }
    let (out_width, out_height) = frames[0].buffer().dimensions();
    let mut out = Vec::new();
    {
        let mut encoder = gif::GifEncoder::new(&mut out);
        if let Err(e) = encoder
            .set_repeat(gif::Repeat::Infinite)
            .and_then(|()| encoder.encode_frames(frames))
        {
            return Some(Err(unusable(e.to_string())));
        }
    }
    Some(Ok(Rendered {
        bytes: out,
        content_type: "image/gif",
        width: out_width,
        height: out_height,
    }))
}

/// Decodes `bytes` within the bounds and makes the thumbnail: PNG when the
/// picture has transparency, JPEG otherwise.
pub fn render(bytes: &[u8], width: u32, height: u32, method: Method) -> Result<Rendered> {
    let unusable = |e: String| {
        Error::new(ErrorCode::Unknown, format!("Cannot make a thumbnail: {e}.")).with_status(400)
    };
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| unusable(e.to_string()))?;
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    reader.limits(limits);
    let image = reader.decode().map_err(|e| unusable(e.to_string()))?;
    let thumbnail = if image.width() <= width && image.height() <= height {
        image
    } else {
        match method {
            Method::Scale => image.thumbnail(width, height),
            Method::Crop => {
                image.resize_to_fill(width, height, image::imageops::FilterType::Triangle)
            }
        }
    };
    let (out_width, out_height) = (thumbnail.width(), thumbnail.height());
    let mut out = Vec::new();
    let content_type = if thumbnail.color().has_alpha() {
        thumbnail
            .write_to(&mut Cursor::new(&mut out), ImageFormat::Png)
            .map_err(|e| unusable(e.to_string()))?;
        "image/png"
    } else {
        DynamicImage::ImageRgb8(thumbnail.to_rgb8())
            .write_to(&mut Cursor::new(&mut out), ImageFormat::Jpeg)
            .map_err(|e| unusable(e.to_string()))?;
        "image/jpeg"
    };
    Ok(Rendered {
        bytes: out,
        content_type,
        width: out_width,
        height: out_height,
    })
}

impl Services {
    /// The thumbnail of local media for an ask, made now if it is the
    /// first ask of its size and method.
    pub async fn thumbnail(
        &self,
        server: &str,
        id: &str,
        width: u32,
        height: u32,
        method: Method,
        animated: bool,
    ) -> Result<(ThumbnailRecord, std::path::PathBuf)> {
        if width == 0 || height == 0 {
            return Err(Error::invalid_param("Thumbnail sizes must be positive."));
        }
        let served = self.local_media(server, id)?;
        let (width, height, method) = pick_size(width, height, method);
        // An animated ask has its own thumbnail (a still picture's is the
        // same file, made once).
        let spec = spec(width, height, method, animated);
        let key = (server, id, spec.as_str());
        if let Some(record) = self.db.get(&tables::THUMBNAILS, key)? {
            let path = self.media_store.path(&record.sha256);
            return Ok((record, path));
        }
        let thumbnailable = served
            .record
            .content_type
            .as_deref()
            .is_some_and(|t| THUMBNAILED.contains(&t));
        if !thumbnailable {
            return Err(Error::new(
                ErrorCode::Unknown,
                "No thumbnail can be made of this type of media.",
            )
            .with_status(400));
        }
        let _slot = self
            .thumbnail_slots
            .acquire()
            .await
            .map_err(|_| Error::internal("thumbnail slots closed"))?;
        let bytes = tokio::fs::read(&served.path)
            .await
            .map_err(|_| not_found())?;
        let rendered = tokio::task::spawn_blocking(move || {
            let moving = animated
                .then(|| render_animated(&bytes, width, height, method))
                .flatten();
            moving.unwrap_or_else(|| render(&bytes, width, height, method))
        })
        .await
        .map_err(Error::internal)??;
        let stored = self.media_store.store_bytes(&rendered.bytes).await?;
        let record = ThumbnailRecord {
            sha256: stored.sha256.clone(),
            content_type: rendered.content_type.to_owned(),
            width: rendered.width,
            height: rendered.height,
            size: stored.size,
        };
        self.put_thumbnail(server, id, &spec, &record)?;
        let path = self.media_store.path(&record.sha256);
        Ok((record, path))
    }

    /// Records a stored thumbnail, and that it uses its file.
    pub(crate) fn put_thumbnail(
        &self,
        server: &str,
        id: &str,
        spec: &str,
        record: &ThumbnailRecord,
    ) -> Result<()> {
        let reference = format!("{id}/{spec}");
        let mut batch = self.db.batch();
        batch.put(&tables::THUMBNAILS, (server, id, spec), record)?;
        batch.put(
            &tables::MEDIA_FILE_REFS,
            (record.sha256.as_str(), server, reference.as_str()),
            &true,
        )?;
        self.db.write(batch)?;
        Ok(())
    }
}

/// Whether a thumbnail could be made of `record` (for clients' previews).
pub fn is_thumbnailable(record: &MediaRecord) -> bool {
    record
        .content_type
        .as_deref()
        .is_some_and(|t| THUMBNAILED.contains(&t))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(width: u32, height: u32) -> Vec<u8> {
        let image = image::RgbImage::from_pixel(width, height, image::Rgb([200, 10, 10]));
        let mut out = Vec::new();
        DynamicImage::ImageRgb8(image)
            .write_to(&mut Cursor::new(&mut out), ImageFormat::Png)
            .unwrap();
        out
    }

    #[test]
    fn animated_gifs_keep_their_frames_when_asked() {
        use image::{Delay, Frame, codecs::gif::GifEncoder};
        let mut gif = Vec::new();
        {
            let mut encoder = GifEncoder::new(&mut gif);
            let frames = (0..3u8).map(|i| {
                let buffer =
                    image::RgbaImage::from_pixel(300, 200, image::Rgba([i * 80, 0, 0, 255]));
                Frame::from_parts(buffer, 0, 0, Delay::from_numer_denom_ms(100, 1))
            });
            encoder.encode_frames(frames).unwrap();
        }
        let moving = render_animated(&gif, 96, 96, Method::Crop)
            .unwrap()
            .unwrap();
        assert_eq!(
            (moving.content_type, moving.width, moving.height),
            ("image/gif", 96, 96)
        );
        use image::AnimationDecoder;
        let decoded = image::codecs::gif::GifDecoder::new(Cursor::new(&moving.bytes)).unwrap();
        assert_eq!(decoded.into_frames().count(), 3);
        // Not a GIF, or one still frame: the still path.
        assert!(render_animated(&png(10, 10), 96, 96, Method::Crop).is_none());
    }

    #[test]
    fn sizes_are_picked_as_synapse_does() {
        assert_eq!(pick_size(32, 32, Method::Crop), (32, 32, Method::Crop));
        assert_eq!(pick_size(50, 50, Method::Crop), (96, 96, Method::Crop));
        assert_eq!(pick_size(1000, 1000, Method::Crop), (96, 96, Method::Crop));
        assert_eq!(
            pick_size(300, 200, Method::Scale),
            (320, 240, Method::Scale)
        );
        assert_eq!(
            pick_size(2000, 2000, Method::Scale),
            (800, 600, Method::Scale)
        );
    }

    #[test]
    fn thumbnails_fit_or_fill_and_bombs_fail() {
        let source = png(1000, 500);
        let scaled = render(&source, 320, 240, Method::Scale).unwrap();
        assert_eq!(
            (scaled.content_type, scaled.width, scaled.height),
            ("image/jpeg", 320, 160)
        );
        assert!(image::load_from_memory(&scaled.bytes).is_ok());
        let cropped = render(&source, 96, 96, Method::Crop).unwrap();
        assert_eq!((cropped.width, cropped.height), (96, 96));
        // Smaller than asked: not enlarged.
        let small = render(&png(20, 10), 96, 96, Method::Crop).unwrap();
        assert_eq!((small.width, small.height), (20, 10));

        // A PNG header claiming 100,000 x 100,000 pixels.
        let mut bomb = png(1, 1);
        bomb[16..20].copy_from_slice(&100_000u32.to_be_bytes());
        bomb[20..24].copy_from_slice(&100_000u32.to_be_bytes());
        assert!(render(&bomb, 96, 96, Method::Crop).is_err());
        assert!(render(b"not an image", 96, 96, Method::Crop).is_err());
    }
}
