//! The protobuf codec of every tidal service: prost's, except that a message
//! that does not decode is INVALID_ARGUMENT (the sender's fault) instead of
//! the INTERNAL tonic's codec reports. Tested over the wire (tidal-cli's
//! `bad_input` tests), since tonic builds its decode buffers internally.

use std::marker::PhantomData;

use prost::Message;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder, ProstCodec};
use tonic::{Code, Status};

/// [`ProstCodec`] with decode errors reported as INVALID_ARGUMENT. The
/// generated clients use it too: a reply that does not decode is then
/// INVALID_ARGUMENT on the client, naming the decode error.
#[derive(Debug, Clone)]
pub struct StrictCodec<T, U> {
    _pd: PhantomData<(T, U)>,
}

impl<T, U> Default for StrictCodec<T, U> {
    fn default() -> Self {
        StrictCodec { _pd: PhantomData }
    }
}

impl<T, U> Codec for StrictCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = <ProstCodec<T, U> as Codec>::Encoder;
    type Decoder = StrictDecoder<<ProstCodec<T, U> as Codec>::Decoder>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::default().encoder()
    }

    fn decoder(&mut self) -> Self::Decoder {
        StrictDecoder(ProstCodec::<T, U>::default().decoder())
    }
}

/// Decodes like prost's decoder `D`; see [`StrictCodec`].
#[derive(Debug, Clone, Default)]
pub struct StrictDecoder<D>(D);

impl<D: Decoder<Error = Status>> Decoder for StrictDecoder<D> {
    type Item = D::Item;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<D::Item>, Status> {
        self.0.decode(buf).map_err(|s| {
            if s.code() == Code::Internal {
                Status::invalid_argument(format!(
                    "undecodable message: {} is not a valid {}",
                    s.message(),
                    std::any::type_name::<D::Item>()
                        .rsplit("::")
                        .next()
                        .unwrap_or("message")
                ))
            } else {
                s
            }
        })
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.0.buffer_settings()
    }
}
